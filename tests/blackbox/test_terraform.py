"""Infrastructure as code: the Terraform module parses, checkov finds nothing in it or in the CloudFormation templates
(or each skip says why, next to its resource), and the module and the templates deploy the same settings.

No server is started and no Terraform binary is needed (none can be installed on the CI machines): python-hcl2 parses
the module, checkov (in .venv-checkov, made by scripts/test) reads both. Everything here runs offline."""
import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "terraform"
TEMPLATES = {name: ROOT / "deploy" / "aws" / f"switchboard-{name}.yaml" for name in ("alb", "nlb")}
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


# --- reading HCL (python-hcl2 keeps the quotes of strings and labels) and CloudFormation YAML (short-form tags) ---

def _clean(value):
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_tf(path: Path) -> dict:
    with path.open() as f:
        return _clean(hcl2.load(f))


class Module:
    """locals, variables and resources of every .tf file directly in deploy/terraform (the module itself)."""

    def __init__(self, directory: Path):
        self.locals, self.variables, self.resources, self.outputs, self.terraform = {}, {}, {}, {}, []
        for path in sorted(directory.glob("*.tf")):
            parsed = parse_tf(path)
            for block in parsed.get("locals", []):
                self.locals.update(block)
            for block in parsed.get("variable", []):
                self.variables.update(block)
            for block in parsed.get("output", []):
                self.outputs.update(block)
            for block in parsed.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources[f"{kind}.{name}"] = body
            self.terraform += parsed.get("terraform", [])

    def default(self, variable: str):
        return self.variables[variable]["default"]

    def resolve(self, value):
        """A literal, `${local.x}` or `${var.x}` (its default), followed until it is a literal."""
        while isinstance(value, str):
            match = re.fullmatch(r"\$\{(local|var)\.([a-z0-9_]+)\}", value)
            if not match:
                break
            value = self.locals[match[2]] if match[1] == "local" else self.default(match[2])
        return value


class CloudFormationLoader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _tag)


def load_template(name: str) -> dict:
    return yaml.load(TEMPLATES[name].read_text(), Loader=CloudFormationLoader)


def attributes(resource: dict, key: str) -> dict:
    return {a["Key"]: a["Value"] for a in resource["Properties"][key]}


def container_environment(template: dict) -> dict:
    container = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


@pytest.fixture(scope="module")
def module() -> Module:
    return Module(MODULE)


# --- syntax ---

def test_every_terraform_file_parses_and_pins_terraform_and_the_aws_provider():
    files = sorted(MODULE.rglob("*.tf"))
    assert len(files) >= 9, files
    roots = {MODULE} | {p.parent for p in files if "examples" in p.parts}
    assert len(roots) >= 3, roots  # the module and its examples
    for path in files:
        parse_tf(path)  # raises on a syntax error
    for root in roots:
        blocks = [b for p in root.glob("*.tf") for b in parse_tf(p).get("terraform", [])]
        assert len(blocks) == 1, f"{root}: one terraform block"
        assert re.fullmatch(r">= 1\.\d+\.\d+, < 2\.0\.0", blocks[0]["required_version"]), root
        aws = blocks[0]["required_providers"][0]["aws"]
        assert aws["source"] == "hashicorp/aws" and re.fullmatch(r">= 5\.\d+, < 7\.0", aws["version"]), root


def test_only_aws_provider_resources_and_every_input_documented_and_validated_where_a_bad_value_breaks(module):
    assert module.resources and all(key.startswith("aws_") for key in module.resources), sorted(module.resources)
    for name, variable in module.variables.items():
        assert variable.get("description"), f"variable {name} has no description"
    validated = {name for name, variable in module.variables.items() if variable.get("validation")}
    must = {"name", "vpc_id", "public_subnet_ids", "private_subnet_ids", "certificate_arn", "load_balancer_type",
            "idle_timeout_seconds", "task_cpu", "task_memory", "log_retention_days", "redis_engine_version",
            "redis_replicas_per_shard", "management_port", "management_cidr_blocks", "environment", "secrets",
            "drain_delay", "drain_grace_period", "client_cidr_blocks"}
    assert must <= validated, must - validated
    for name, output in module.outputs.items():
        assert output.get("description"), f"output {name} has no description"


def test_readme_tables_list_every_input_and_output(module):
    readme = (MODULE / "README.md").read_text()
    inputs = readme.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    outputs = readme.split("## Outputs", 1)[1].split("\n## ", 1)[0]
    documented_inputs = set(re.findall(r"^\| `?([a-z0-9_]+)`? \|", inputs, re.M))
    documented_outputs = set(re.findall(r"^\| `?([a-z0-9_]+)`? \|", outputs, re.M))
    assert documented_inputs == set(module.variables), (set(module.variables) ^ documented_inputs)
    assert documented_outputs == set(module.outputs), (set(module.outputs) ^ documented_outputs)
    for name, variable in module.variables.items():
        row = re.search(rf"^\| `?{name}`? \|.*$", inputs, re.M)[0]
        required = "default" not in variable
        assert row.rstrip(" |").endswith("yes" if required else "no"), row


# --- security ---

def checkov(directory: Path, framework: str) -> dict:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: scripts/test installs it (tests/requirements-checkov.txt)"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}
    env.pop("BC_API_KEY", None)
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-4000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1 and reports[0]["check_type"] == framework, result.stdout[:2000]
    return reports[0]


@pytest.mark.parametrize("directory,framework", [("deploy/terraform", "terraform"), ("deploy/aws", "cloudformation")])
def test_checkov_finds_no_failed_check(directory, framework):
    report = checkov(ROOT / directory, framework)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
              for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, summary
    # A scan that read nothing would pass too: each template and the module's resources were checked.
    assert summary["resource_count"] >= (40 if framework == "terraform" else 50), summary
    assert summary["passed"] >= 100, summary
    for check in report["results"]["skipped_checks"]:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) >= 30, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_every_checkov_skip_sits_in_its_resource_with_a_reason():
    skips = []
    for path in MODULE.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.fullmatch(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.{30,})", line)
                assert match, f"{path.name}: {line.strip()}"
                skips.append(match[1])
    for name in TEMPLATES:
        for resource in load_template(name)["Resources"].values():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]) and len(skip.get("comment", "")) >= 30, skip
                skips.append(skip["id"])
    # The skips the docs explain (docs/deploy.md, "What checkov checks"); a new one must be explained there too.
    documented = set(re.findall(r"`(CKV2?_AWS_\d+)`", (ROOT / "docs" / "deploy.md").read_text()))
    assert set(skips) <= documented, set(skips) - documented


# --- the module and the templates deploy the same thing ---

def test_terraform_and_cloudformation_expose_the_same_settings(module):
    tf, r = module, module.resources
    public_tg, management_tg = r["aws_lb_target_group.public"], r["aws_lb_target_group.management"]
    redis = r["aws_elasticache_replication_group.redis"]
    # jsonencode([{...}]) and merge(var.environment, {...}) come back as expression text.
    definition = r["aws_ecs_task_definition.switchboard"]["container_definitions"]
    environment_text = tf.locals["container_environment"]
    for expected in ("readonlyRootFilesystem = true", "stopTimeout = local.stop_timeout_seconds",
                     "containerPort = local.container_port", "containerPort = var.management_port",
                     'softLimit = local.nofile_limit', 'hardLimit = local.nofile_limit',
                     'command = ["CMD", "/app/switchboard", "health"]', "name = local.container_name"):
        assert expected in definition, expected
    for expected in ('SWITCHBOARD_REDIS_URL = "rediss://${local.redis_endpoint}:${local.redis_port}"',
                     'SWITCHBOARD_DRAIN_DELAY = "${var.drain_delay}s"',
                     'SWITCHBOARD_DRAIN_GRACE_PERIOD = "${var.drain_grace_period}s"',
                     "SWITCHBOARD_METRICS_EMF_INTERVAL = local.emf_interval",
                     "SWITCHBOARD_METRICS_EMF_SERVICE = local.emf_service",
                     "SWITCHBOARD_MANAGEMENT_PORT = tostring(var.management_port)"):
        assert expected in environment_text, expected
    secrets_text = tf.locals["container_secrets"]
    assert "SWITCHBOARD_REDIS_PASSWORD" in secrets_text and "SWITCHBOARD_MANAGEMENT_BEARER_TOKEN" in secrets_text
    connections = r["aws_appautoscaling_policy.connections"]["target_tracking_scaling_policy_configuration"][0]
    metric = connections["customized_metric_specification"][0]
    service = r["aws_ecs_service.switchboard"]

    for name in TEMPLATES:
        t = load_template(name)
        res, params = t["Resources"], t["Parameters"]
        tg, mtg = res["TargetGroup"]["Properties"], res["ManagementTargetGroup"]["Properties"]
        container = res["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        env = container_environment(t)
        where = f"switchboard-{name}.yaml"

        # ports
        port = tf.resolve(public_tg["port"])
        assert port == tf.locals["container_port"] == tg["Port"] == container["PortMappings"][0]["ContainerPort"], where
        assert res["ServiceIngressFromLoadBalancer"]["Properties"]["FromPort"] == port, where
        management_port = tf.default("management_port")
        assert tf.resolve(management_tg["port"]) == management_port == mtg["Port"], where
        assert env["SWITCHBOARD_MANAGEMENT_PORT"] == str(management_port), where
        assert container["PortMappings"][1]["ContainerPort"] == management_port, where
        assert res["ManagementListener"]["Properties"]["Port"] == management_port, where
        assert res["ManagementLoadBalancer"]["Properties"]["Scheme"] == "internal"
        assert r["aws_lb.management"]["internal"] is True and r["aws_lb.public"]["internal"] is False
        assert tf.locals["public_port"] == res["Listener"]["Properties"]["Port"] == 443, where
        assert tf.locals["ssl_policy"] == res["Listener"]["Properties"]["SslPolicy"], where

        # health checks, on both target groups
        for tf_group, cfn_group in ((public_tg, tg), (management_tg, mtg)):
            check = tf_group["health_check"][0]
            assert tf.resolve(check["path"]) == cfn_group["HealthCheckPath"] == "/health", where
            assert tf.resolve(check["interval"]) == cfn_group["HealthCheckIntervalSeconds"], where
            assert tf.resolve(check["healthy_threshold"]) == cfn_group["HealthyThresholdCount"], where
            assert tf.resolve(check["unhealthy_threshold"]) == cfn_group["UnhealthyThresholdCount"], where
            assert check["protocol"] == cfn_group.get("HealthCheckProtocol", "HTTP") == "HTTP", where
            assert tf.resolve(tf_group["deregistration_delay"]) == int(
                attributes({"Properties": cfn_group}, "TargetGroupAttributes")["deregistration_delay.timeout_seconds"]), where

        # the drain: deregistration delay, stop timeout, drain.delay + drain.grace_period inside them
        delay = tf.locals["deregistration_delay_seconds"]
        assert tf.locals["stop_timeout_seconds"] == container["StopTimeout"] == delay, where
        assert env["SWITCHBOARD_DRAIN_DELAY"] == f"{tf.default('drain_delay')}s", where
        assert env["SWITCHBOARD_DRAIN_GRACE_PERIOD"] == f"{tf.default('drain_grace_period')}s", where
        assert tf.default("drain_delay") + tf.default("drain_grace_period") < container["StopTimeout"], where
        assert tf.locals["health_check_grace_seconds"] == res["Service"]["Properties"]["HealthCheckGracePeriodSeconds"]
        assert tf.locals["nofile_limit"] == container["Ulimits"][0]["SoftLimit"] == container["Ulimits"][0]["HardLimit"]
        assert container["ReadonlyRootFilesystem"] is True, where
        assert container["HealthCheck"]["Command"] == ["CMD", "/app/switchboard", "health"], where
        assert {s["Name"] for s in container["Secrets"]} == {"SWITCHBOARD_REDIS_PASSWORD", "SWITCHBOARD_MANAGEMENT_BEARER_TOKEN"}

        # Redis: TLS in transit, at rest, AUTH, failover, the same engine and size
        props = res["Redis"]["Properties"]
        assert redis["transit_encryption_enabled"] is True and props["TransitEncryptionEnabled"] is True, where
        assert redis["at_rest_encryption_enabled"] is True and props["AtRestEncryptionEnabled"] is True, where
        assert redis["automatic_failover_enabled"] is True and props["AutomaticFailoverEnabled"] is True, where
        assert redis["multi_az_enabled"] is True and props["MultiAZEnabled"] is True, where
        assert "auth_token" in redis and "AuthToken" in props, where
        assert tf.default("redis_engine_version") == props["EngineVersion"], where
        assert props["CacheNodeType"] == {"Ref": "RedisNodeType"}, where
        assert params["RedisNodeType"]["Default"] == tf.default("redis_node_type"), where
        assert tf.default("redis_replicas_per_shard") + 1 == props["NumCacheClusters"], where
        assert tf.default("redis_snapshot_retention_days") == props["SnapshotRetentionLimit"], where
        assert env["SWITCHBOARD_REDIS_URL"]["Fn::Sub"].startswith("rediss://"), where

        # load balancer: idle timeout (ALB), cross-zone and client IPs (NLB), no stickiness
        lb = attributes(res["LoadBalancer"], "LoadBalancerAttributes")
        if name == "alb":
            assert params["IdleTimeoutSeconds"]["Default"] == tf.default("idle_timeout_seconds"), where
            assert lb["routing.http.drop_invalid_header_fields.enabled"] == "true"
            assert attributes(res["TargetGroup"], "TargetGroupAttributes")["stickiness.enabled"] == "false"
            stickiness = public_tg["dynamic"][0]["stickiness"]
            assert stickiness["for_each"] == "${local.alb ? [1] : []}" and stickiness["content"][0]["enabled"] is False
        else:
            assert lb["load_balancing.cross_zone.enabled"] == "true" and r["aws_lb.public"]["enable_cross_zone_load_balancing"]
            tga = attributes(res["TargetGroup"], "TargetGroupAttributes")
            assert tga["preserve_client_ip.enabled"] == "true" and public_tg["preserve_client_ip"] == "${local.alb ? null : true}"
            assert tga["deregistration_delay.connection_termination.enabled"] == "false", where
            assert public_tg["connection_termination"] == "${local.alb ? null : false}"
        assert params["DeletionProtection"]["Default"] == str(tf.default("deletion_protection")).lower(), where

        # logs
        assert params["LogRetentionDays"]["Default"] == tf.default("log_retention_days"), where
        assert "KmsKeyId" in res["LogGroup"]["Properties"] and "kms_key_id" in r["aws_cloudwatch_log_group.switchboard"]

        # scaling: the metric the binary emits, the same targets and bounds
        scaling = res["ConnectionScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        spec = scaling["CustomizedMetricSpecification"]
        assert tf.resolve(metric["namespace"]) == spec["Namespace"] == "Switchboard", where
        assert tf.resolve(metric["metric_name"]) == spec["MetricName"] == "ActiveConnections", where
        assert tf.resolve(metric["metric_dimension"][0]["name"]) == spec["Dimensions"][0]["Name"] == "ServiceName"
        assert tf.resolve(metric["statistic"]) == spec["Statistic"] and metric["unit"] == spec["Unit"], where
        assert metric["metric_dimension"][0]["value"] == "${local.emf_service}"
        assert spec["Dimensions"][0]["Value"] == env["SWITCHBOARD_METRICS_EMF_SERVICE"], where
        assert tf.locals["emf_interval"] == env["SWITCHBOARD_METRICS_EMF_INTERVAL"], where
        assert tf.resolve(connections["scale_in_cooldown"]) == scaling["ScaleInCooldown"], where
        assert tf.resolve(connections["scale_out_cooldown"]) == scaling["ScaleOutCooldown"], where
        for variable, parameter in (("target_connections_per_task", "TargetConnectionsPerTask"),
                                    ("target_cpu_percent", "TargetCpuPercent"), ("min_tasks", "MinTasks"),
                                    ("max_tasks", "MaxTasks"), ("desired_count", "DesiredCount"),
                                    ("task_cpu", "TaskCpu"), ("task_memory", "TaskMemory")):
            assert tf.default(variable) == params[parameter]["Default"], f"{where}: {variable} / {parameter}"

        # deployment: rolling with a circuit breaker, private tasks
        deployment = res["Service"]["Properties"]["DeploymentConfiguration"]
        assert service["deployment_minimum_healthy_percent"] == deployment["MinimumHealthyPercent"], where
        assert service["deployment_maximum_percent"] == deployment["MaximumPercent"], where
        assert service["deployment_circuit_breaker"][0]["rollback"] is deployment["DeploymentCircuitBreaker"]["Rollback"]
        assert service["network_configuration"][0]["assign_public_ip"] is False
        assert res["Service"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        assert len(service["load_balancer"]) == len(res["Service"]["Properties"]["LoadBalancers"]) == 2, where


def test_every_switchboard_variable_the_deployments_set_is_one_the_binary_knows(module):
    schema = (ROOT / "Sources" / "SwitchboardConfiguration" / "ConfigurationSchema.swift").read_text()
    keys = re.findall(r'(?:\.scalar\(\s*|key:\s*)"([a-z][a-z0-9_.-]*)"', schema)
    known = {"SWITCHBOARD_" + re.sub(r"[.-]", "_", key).upper() for key in keys}
    assert "SWITCHBOARD_MANAGEMENT_PORT" in known and "SWITCHBOARD_REDIS_URL" in known, sorted(known)
    used = set(re.findall(r"\b(SWITCHBOARD_[A-Z0-9_]+)\b", "\n".join(
        p.read_text() for p in [*MODULE.rglob("*.tf"), *TEMPLATES.values()])))
    assert used and used <= known, used - known  # the gateway refuses to start on an unknown SWITCHBOARD_* variable


def test_security_groups_open_exactly_the_designed_paths(module):
    """Clients → load balancer 443 → tasks 8080; callers → internal NLB → tasks 9090; tasks → Redis 6379 and 443 out."""
    def ref(value):
        match = re.fullmatch(r"\$\{aws_security_group\.([a-z_]+)\.id\}", str(value))
        return f"sg:{match[1]}" if match else value

    def port(value):
        return module.resolve(value) if not str(value).startswith("${var.management_port") else "management"

    tf_rules = set()
    for key, body in module.resources.items():
        kind = key.split(".")[0]
        if kind == "aws_security_group":
            assert "ingress" not in body and "egress" not in body, f"{key}: rules are separate resources"
        if kind.startswith("aws_vpc_security_group_"):
            peer = body.get("cidr_ipv4") or ref(body.get("referenced_security_group_id"))
            if peer == "${each.value}":
                peer = body["for_each"]
            direction = "in" if "ingress" in kind else "out"
            tf_rules.add((ref(body["security_group_id"]), direction, port(body["from_port"]), port(body["to_port"]), peer))
    assert tf_rules == {
        ("sg:load_balancer", "in", 443, 443, "${toset(var.client_cidr_blocks)}"),
        ("sg:load_balancer", "out", 8080, 8080, "sg:tasks"),
        ("sg:management", "in", "management", "management", "${toset(local.management_cidr_blocks)}"),
        ("sg:management", "in", "management", "management", "${toset(var.management_security_group_ids)}"),
        ("sg:management", "out", "management", "management", "sg:tasks"),
        ("sg:tasks", "in", 8080, 8080, "sg:load_balancer"),
        ("sg:tasks", "in", "management", "management", "sg:management"),
        ("sg:tasks", "out", 443, 443, "0.0.0.0/0"),
        ("sg:tasks", "out", 6379, 6379, "sg:redis"),
        ("sg:redis", "in", 6379, 6379, "sg:tasks"),
    }, tf_rules

    for name in TEMPLATES:
        resources = load_template(name)["Resources"]
        rules = set()

        def peer(rule):
            for key in ("CidrIp", "SourceSecurityGroupId", "DestinationSecurityGroupId"):
                if key in rule:
                    value = rule[key]
                    return f"ref:{value['Ref']}" if isinstance(value, dict) else value
            raise AssertionError(rule)

        for logical, resource in resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::EC2::SecurityGroup":
                for direction, key in (("in", "SecurityGroupIngress"), ("out", "SecurityGroupEgress")):
                    for rule in props.get(key, []):
                        assert rule.get("Description"), (name, logical, rule)
                        rules.add((logical, direction, str(rule["IpProtocol"]), rule.get("FromPort"), peer(rule)))
            elif resource["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
                assert props.get("Description"), (name, logical)
                direction = "in" if resource["Type"].endswith("Ingress") else "out"
                rules.add((props["GroupId"]["Ref"], direction, props["IpProtocol"], props["FromPort"], peer(props)))
        clients = "0.0.0.0/0" if name == "alb" else "ref:ClientCidr"
        assert rules == {
            ("LoadBalancerSecurityGroup", "in", "tcp", 443, clients),
            ("LoadBalancerSecurityGroup", "out", "tcp", 8080, "ref:ServiceSecurityGroup"),
            ("ManagementSecurityGroup", "in", "tcp", 9090, "ref:ManagementClientCidr"),
            ("ManagementSecurityGroup", "out", "tcp", 9090, "ref:ServiceSecurityGroup"),
            ("ServiceSecurityGroup", "in", "tcp", 8080, "ref:LoadBalancerSecurityGroup"),
            ("ServiceSecurityGroup", "in", "tcp", 9090, "ref:ManagementSecurityGroup"),
            ("ServiceSecurityGroup", "out", "tcp", 443, "0.0.0.0/0"),
            ("ServiceSecurityGroup", "out", "tcp", 6379, "ref:RedisSecurityGroup"),
            ("RedisSecurityGroup", "in", "tcp", 6379, "ref:ServiceSecurityGroup"),
            ("RedisSecurityGroup", "out", "-1", None, "127.0.0.1/32"),  # replaces the default allow-all egress
        }, (name, rules)
