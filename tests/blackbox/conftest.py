"""Black-box tests: each starts the real `switchboard` binary and drives it over real sockets."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHBOARD_BIN", ROOT / ".build" / "debug" / "switchboard"))
ARTIFACTS = ROOT / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running gateway process; stopped by PID when the test ends."""

    def __init__(self, *flags: str, env: dict | None = None):
        self.port = free_port()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(self.port), *flags],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # The gateway refuses unknown SWITCHBOARD_* variables, so the harness's own never reach it.
            env={**{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}, **(env or {})},
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"switchboard exited with {self.process.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("switchboard did not start listening")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http(self, path: str, method: str = "GET") -> tuple[int, dict | str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        """The server's JSON log lines."""
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def disconnects(self, at_least: int = 0, timeout: float = 5) -> list[tuple[int, str]]:
        """(close code, reason) of every $disconnect the server logged, waiting up to `timeout` seconds for
        `at_least` of them: a client's close returns before the server has logged the disconnect."""
        deadline = time.monotonic() + timeout
        while True:
            found = [(int(e["closeCode"]), e["closeReason"]) for e in self.log_events() if e["msg"] == "disconnected"]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def start_server():
    servers: list[Server] = []

    def start(*flags: str, env: dict | None = None) -> Server:
        server = Server(*flags, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server) -> Server:
    return start_server()


@pytest.fixture
def rawws_factory():
    from rawws import RawWebSocket

    sockets = []

    def make(port: int, path: str = "/ws", **kwargs) -> RawWebSocket:
        ws = RawWebSocket(port, path, **kwargs)
        sockets.append(ws)
        return ws

    yield make
    for ws in sockets:
        ws.close()


# A real redis-server and gateway nodes over it, for the cluster tests.

KEY_ID, SECRET, TOKEN = "AKIDCLUSTER", "cluster-secret", "cluster-token-0123456789"


def api(node, method, path, body=None):
    """A management call with the bearer token; returns (status, JSON or None)."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL)
        wait_for_port(self.port)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True).stdout.strip()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def wait_for_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@pytest.fixture
def redis():
    server = Redis()
    yield server
    server.stop()


@pytest.fixture
def cluster(start_server, redis):
    def start(count=2, *extra):
        return [start_server("--redis-url", redis.url, "--node-id", f"node{i}", "--redis-ttl", "3s",
                             "--management-access-keys", f"{KEY_ID}={SECRET}", "--management-bearer-token", TOKEN, *extra) for i in range(count)]
    return start


@pytest.fixture
def haproxy(tmp_path):
    """`start(node1, node2)`: the tested deploy/haproxy/haproxy.cfg (round robin, no stickiness) in front of two
    nodes; returns its port."""
    from helpers import eventually

    proxies = []

    def serving(port):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
        except OSError:
            return False

    def start(*nodes):
        port = free_port()
        config = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
        config = config.replace("bind *:8080", f"bind 127.0.0.1:{port}").replace("node1:8080", f"127.0.0.1:{nodes[0].port}") \
            .replace("node2:8080", f"127.0.0.1:{nodes[1].port}").replace("stats socket", "# stats socket")
        assert "balance roundrobin" in config and "stick-table" not in config and "cookie" not in config  # no stickiness
        (tmp_path / "haproxy.cfg").write_text(config)
        proxy = subprocess.Popen(["haproxy", "-f", str(tmp_path / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        proxies.append(proxy)
        wait_for_port(port)
        eventually(lambda: serving(port), message="haproxy serving")
        return port

    yield start
    for proxy in proxies:
        proxy.send_signal(signal.SIGKILL)
        proxy.wait(timeout=10)
