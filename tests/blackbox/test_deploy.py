"""Deployment files: the AWS templates pass cfn-lint, compose wires the cluster, the container's health check works."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import eventually

ROOT = Path(__file__).resolve().parents[2]


def test_cloudformation_templates_pass_cfn_lint():
    templates = sorted(str(p) for p in (ROOT / "deploy/aws").glob("*.yaml"))
    assert len(templates) == 2
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), *templates], capture_output=True, text=True)
    assert result.returncode & 2 == 0, result.stdout + result.stderr  # bit 2: errors (warnings are bit 4)


def test_templates_scale_on_the_metric_the_binary_emits(start_server):
    template = (ROOT / "deploy/aws/switchboard-alb.yaml").read_text()
    assert "MetricName: ActiveConnections" in template and "Namespace: Switchboard" in template
    server = start_server("--metrics-emf-interval", "200ms", "--metrics-emf-service", "stack-switchboard")
    def emf_lines():
        return [json.loads(line) for line in server.output().splitlines() if line.startswith('{"_aws"')]

    eventually(lambda: len(emf_lines()) >= 2, timeout=5, message="two EMF lines at a 200 ms interval")
    lines = emf_lines()
    metric = lines[-1]["_aws"]["CloudWatchMetrics"][0]
    assert metric["Namespace"] == "Switchboard" and metric["Dimensions"] == [["ServiceName"]]
    assert metric["Metrics"] == [{"Name": "ActiveConnections", "Unit": "Count"}]
    assert lines[-1]["ServiceName"] == "stack-switchboard" and lines[-1]["ActiveConnections"] == 0


def test_compose_runs_redis_two_nodes_and_the_tested_haproxy_config():
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "node1", "node2", "haproxy"}
    for node in ("node1", "node2"):
        assert services[node]["environment"]["SWITCHBOARD_REDIS_URL"] == "redis://redis:6379"
    assert services["haproxy"]["volumes"] == ["./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    config = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
    assert "server node1 node1:8080 check" in config and "server node2 node2:8080 check" in config
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--static-swift-stdlib" in dockerfile and "USER switchboard" in dockerfile and "HEALTHCHECK" in dockerfile
    # The served files are a resource bundle that must sit beside the binary (see the next test).
    assert "/app/switchboard_SwitchboardGateway.resources" in dockerfile


def test_a_binary_without_its_resource_bundle_refuses_to_start_and_says_where_it_looked(tmp_path):
    from conftest import BINARY

    alone = tmp_path / "switchboard"
    alone.write_bytes(BINARY.read_bytes())
    alone.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(alone), "serve", "--port", "0"], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "SWITCHBOARD_RESOURCES" in result.stderr, result.stderr
    bundle = BINARY.parent / "switchboard_SwitchboardGateway.resources"
    process = subprocess.Popen(
        [str(alone), "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "SWITCHBOARD_RESOURCES": str(bundle)},
    )
    try:
        eventually(lambda: process.poll() is None and "listening" in (process.stdout.readline() or ""), timeout=10,
                   message="the binary serves with SWITCHBOARD_RESOURCES naming the bundle")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_health_command_is_the_container_health_check(server):
    from conftest import BINARY

    ok = subprocess.run([str(BINARY), "health", "--url", f"http://127.0.0.1:{server.port}/health"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"status": "ok"}
    down = subprocess.run([str(BINARY), "health", "--url", "http://127.0.0.1:9/health"], capture_output=True, text=True)
    assert down.returncode != 0
