"""A small network of Linux network namespaces for fault tests: Redis in one namespace, each gateway node in its own,
joined by veth pairs whose links can be made lossy or cut (iptables DROP, random or total) and slowed.

    root namespace (test clients)
      sbnf{s}c{i} 10.77.{s}.{4i+1}  <-veth->  c0 10.77.{s}.{4i+2}   namespace sbnf{s}-node{i} (gateway node i, :8080)
                                              r0 10.78.{s}.{4i+2}   <-veth->  n{i} 10.78.{s}.{4i+1}
                                                                              namespace sbnf{s}-redis (:6379)

Clients reach node i at 10.77.{s}.{4i+2}; node i reaches Redis only at 10.78.{s}.{4i+1}, over its own link. Nothing
is routed through the root namespace (no ip_forward change). Needs root (CAP_NET_ADMIN), iproute2 and iptables.
`s` is a slot (0-63) held with flock for the network's lifetime, so runs side by side (two people running the suite)
never share a name or an address; a slot's leftovers from a crashed run are removed when the slot is next taken.

Delay: `tc qdisc ... netem` is used when the kernel has sch_netem (`Network.netem`). Kernels without it (this
project's Firecracker VMs: "Specified qdisc kind is unknown") get `DelayProxy` instead: a TCP relay inside Redis'
namespace, on port 6380 of each link address, that holds every chunk Redis sends for the delay (switched on and off
with SIGUSR1/SIGUSR2 while connections stay up), which is what netem on the Redis end of the link does.
"""
import asyncio
import fcntl
import json
import os
import re
import signal
import socket
import sys
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PREFIX = "sbnf"
REDIS_PORT = 6379
NODE_PORT = 8080
SLOTS = 64
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"


def sh(*argv: str, check: bool = True) -> str:
    run = subprocess.run(argv, capture_output=True, text=True)
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({run.returncode}): {run.stderr.strip()}")
    return run.stdout


def wait_for_port(host: str, port: int, timeout: float = 10, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


def cleanup_leftovers(prefix: str) -> None:
    """Removes what a crashed earlier run of this slot left: processes in its namespaces (by PID), the namespaces and
    root-side veths (deleting a namespace deletes its veths, its qdiscs and its iptables rules)."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if not re.fullmatch(rf"{prefix}-(redis|node\d+)", name):
            continue
        for pid in sh("ip", "netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if re.fullmatch(rf"{prefix}c\d+", name):
            sh("ip", "link", "del", name, check=False)


def take_slot():
    """A slot no live run holds: (number, the open lock file, held until closed)."""
    for slot in range(SLOTS):
        lock = open(f"/tmp/{PREFIX}-slot-{slot}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, lock
        except BlockingIOError:
            lock.close()
    raise RuntimeError(f"all {SLOTS} network slots are taken")


class Network:
    """Namespaces for Redis and `nodes` gateway nodes, with the links above; `close()` removes all of it."""

    def __init__(self, nodes: int = 2):
        self.nodes = nodes
        self.processes: list[subprocess.Popen] = []
        self.slot, self._lock = take_slot()
        self.prefix = f"{PREFIX}{self.slot}"
        self.redis_ns = f"{self.prefix}-redis"
        cleanup_leftovers(self.prefix)
        try:
            self._create()
        except Exception:
            self.close()
            raise

    def node_ns(self, i: int) -> str:
        return f"{self.prefix}-node{i}"

    def client_address(self, i: int) -> str:
        """Where the root namespace reaches node i."""
        return f"10.77.{self.slot}.{4 * i + 2}"

    def root_address(self, i: int) -> str:
        """The root namespace's end of node i's client link (node i reaches the root namespace here)."""
        return f"10.77.{self.slot}.{4 * i + 1}"

    def redis_address(self, i: int) -> str:
        """Where node i reaches Redis: Redis' end of node i's link."""
        return f"10.78.{self.slot}.{4 * i + 1}"

    def _create(self) -> None:
        sh("ip", "netns", "add", self.redis_ns)
        sh("ip", "-n", self.redis_ns, "link", "set", "lo", "up")
        for i in range(self.nodes):
            ns, veth = self.node_ns(i), f"{self.prefix}c{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # The client link: root namespace <-> node.
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "c0", "netns", ns)
            sh("ip", "addr", "add", f"{self.root_address(i)}/30", "dev", veth)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.client_address(i)}/30", "dev", "c0")
            sh("ip", "-n", ns, "link", "set", "c0", "up")
            # The Redis link: node <-> Redis.
            sh("ip", "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", f"n{i}", "netns", self.redis_ns)
            sh("ip", "-n", ns, "addr", "add", f"10.78.{self.slot}.{4 * i + 2}/30", "dev", "r0")
            sh("ip", "-n", ns, "link", "set", "r0", "up")
            sh("ip", "-n", self.redis_ns, "addr", "add", f"{self.redis_address(i)}/30", "dev", f"n{i}")
            sh("ip", "-n", self.redis_ns, "link", "set", f"n{i}", "up")

    def spawn(self, ns: str, argv: list[str], **popen) -> subprocess.Popen:
        """Runs argv inside namespace `ns`. `ip netns exec` execs the command itself, so the Popen's PID is the
        command's PID (signals such as SIGSTOP reach it directly)."""
        process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen)
        self.processes.append(process)
        return process

    # Faults -------------------------------------------------------------------------------------------------------

    def redis_links(self) -> list[tuple[str, str]]:
        """(namespace, device) of both ends of every node's Redis link."""
        ends = []
        for i in range(self.nodes):
            ends += [(self.node_ns(i), "r0"), (self.redis_ns, f"n{i}")]
        return ends

    def netem(self, spec: str, links: list[tuple[str, str]] | None = None) -> None:
        """Applies `tc qdisc ... netem SPEC` (e.g. "delay 200ms", "loss 15%") on the egress of each (namespace, device)."""
        for ns, dev in links or self.redis_links():
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "netem", *spec.split())

    def clear_netem(self, links: list[tuple[str, str]] | None = None) -> None:
        for ns, dev in links or self.redis_links():
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    @staticmethod
    def has_netem() -> bool:
        probe = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], capture_output=True,
                               text=True)
        if probe.returncode == 0:
            sh("tc", "qdisc", "del", "dev", "lo", "root", check=False)
        return probe.returncode == 0

    @staticmethod
    def _drop_rules(probability: float | None) -> list[list[str]]:
        match = ["-m", "statistic", "--mode", "random", "--probability", str(probability)] if probability else []
        return [["INPUT", "-i", "r0", *match, "-j", "DROP"], ["OUTPUT", "-o", "r0", *match, "-j", "DROP"]]

    def partition(self, i: int) -> None:
        """Cuts node i from Redis: every packet on its Redis link is dropped, both ways (no RST, no ICMP)."""
        for rule in self._drop_rules(None):
            sh("ip", "netns", "exec", self.node_ns(i), "iptables", "-w", "-A", *rule)

    def heal(self, i: int) -> None:
        for rule in self._drop_rules(None):
            sh("ip", "netns", "exec", self.node_ns(i), "iptables", "-w", "-D", *rule, check=False)

    def lose(self, probability: float) -> None:
        """Drops each packet on every node's Redis link with this probability, both ways (netem loss, by iptables)."""
        for i in range(self.nodes):
            for rule in self._drop_rules(probability):
                sh("ip", "netns", "exec", self.node_ns(i), "iptables", "-w", "-A", *rule)

    def stop_losing(self, probability: float) -> None:
        for i in range(self.nodes):
            for rule in self._drop_rules(probability):
                sh("ip", "netns", "exec", self.node_ns(i), "iptables", "-w", "-D", *rule, check=False)

    def dropped_packets(self) -> int:
        """Packets the DROP rules on the nodes' Redis links have dropped so far (proof that a fault took effect)."""
        total = 0
        for i in range(self.nodes):
            for line in sh("ip", "netns", "exec", self.node_ns(i), "iptables", "-w", "-L", "-v", "-n", "-x").splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[2] == "DROP":
                    total += int(fields[0])
        return total

    # Teardown -----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGCONT)  # a stopped process dies of SIGKILL too, but be plain
                    process.send_signal(signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        for i in range(self.nodes):
            sh("ip", "netns", "del", self.node_ns(i), check=False)  # takes its veths (and their root-side peers) along
        sh("ip", "netns", "del", self.redis_ns, check=False)
        cleanup_leftovers(self.prefix)
        self._lock.close()  # the slot is free again


class RedisInNamespace:
    """redis-server in the Redis namespace, listening on every node link's address."""

    def __init__(self, net: Network):
        self.net = net
        binds = [net.redis_address(i) for i in range(net.nodes)]
        self.process = net.spawn(net.redis_ns, ["redis-server", "--port", str(REDIS_PORT), "--bind", *binds,
                                            "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING", check=False) != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start in its namespace")
            time.sleep(0.05)

    def url(self, node: int) -> str:
        return f"redis://{self.net.redis_address(node)}:{REDIS_PORT}"

    def cli(self, *args: str, check: bool = True) -> str:
        run = subprocess.run(["ip", "netns", "exec", self.net.redis_ns, "redis-cli", "-h", self.net.redis_address(0), "-p", str(REDIS_PORT), *args],
                             capture_output=True, text=True, timeout=10)
        if check and run.returncode != 0:
            raise RuntimeError(f"redis-cli {args}: {run.stderr}")
        return run.stdout.strip()

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


class Node:
    """A gateway node in namespace sbnf{s}-node{i}, reached from the root namespace at client_address(i):8080."""

    def __init__(self, net: Network, i: int, *flags: str, binary: Path):
        self.i = i
        self.host = net.client_address(i)
        self.port = NODE_PORT
        ARTIFACTS.mkdir(exist_ok=True)
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
        self.log_path = ARTIFACTS / f"netns-{test + '-' if test else ''}{net.prefix}-node{i}.log"
        self.log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.process = net.spawn(net.node_ns(i), [str(binary), "serve", "--host", self.host, "--port", str(self.port), *flags],
                                 stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(self.host, self.port, timeout=15, process=self.process)
        except RuntimeError as error:
            raise RuntimeError(f"{error}: {self.output()[-2000:]}") from None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def http(self, path: str, method: str = "GET", token: str | None = None, body: bytes | None = None,
             timeout: float = 5) -> tuple[int, dict | str | None]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://{self.host}:{self.port}{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        if not payload:
            return status, None
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict]:
        events = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return events

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


class DelayProxy:
    """A relay in Redis' namespace on port 6380 of each link address to Redis on 6379; `slow()` holds every chunk
    from Redis to the nodes `delay` seconds (order kept), `fast()` stops holding them. Nodes use `url(i)`."""

    PORT = 6380

    def __init__(self, net: Network, delay: float):
        binds = ",".join(net.redis_address(i) for i in range(net.nodes))
        self.net = net
        self.process = net.spawn(net.redis_ns, [sys.executable, __file__, "delay-proxy", binds, str(self.PORT), str(REDIS_PORT), str(delay)],
                                 stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("delay proxy did not start")

    def url(self, node: int) -> str:
        return f"redis://{self.net.redis_address(node)}:{self.PORT}"

    def slow(self) -> None:
        os.kill(self.process.pid, signal.SIGUSR1)

    def fast(self) -> None:
        os.kill(self.process.pid, signal.SIGUSR2)


async def _delay_proxy(binds: list[str], port: int, target_port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    state = {"delay": 0.0}
    loop.add_signal_handler(signal.SIGUSR1, lambda: state.update(delay=delay))
    loop.add_signal_handler(signal.SIGUSR2, lambda: state.update(delay=0.0))

    async def pipe(reader, writer, delayed: bool):
        queue: asyncio.Queue = asyncio.Queue()

        async def pump():
            try:
                while data := await reader.read(65536):
                    queue.put_nowait((loop.time() + (state["delay"] if delayed else 0), data))
            except OSError:
                pass
            queue.put_nowait((loop.time() + (state["delay"] if delayed else 0), b""))

        pumping = asyncio.ensure_future(pump())
        try:
            while True:
                due, data = await queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            pumping.cancel()
            writer.close()

    async def handle(client_reader, client_writer):
        host = client_writer.get_extra_info("sockname")[0]
        try:
            redis_reader, redis_writer = await asyncio.open_connection(host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, redis_writer, False), pipe(redis_reader, client_writer, True))

    server = await asyncio.start_server(handle, binds, port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "delay-proxy":
    asyncio.run(_delay_proxy(sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])))
