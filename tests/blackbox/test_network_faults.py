"""Faults on a real network, not loopback: Redis and each of two gateway nodes in their own network namespace, the
nodes reaching Redis over links that are cut (iptables DROP), slowed, made lossy, or whose Redis is frozen (SIGSTOP).
The test clients stay in the root namespace (see netns.py for the layout). Needs root and iproute2 + iptables."""
import os
import shutil
import statistics
import threading
import time

import pytest
from websockets.sync.client import connect

import netns
from backend import Backend
from conftest import BINARY
from helpers import eventually, recv_json, send_json

TOKEN = "netfault-token-0123456789"
TTL = "3s"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables") or not shutil.which("ip"),
                                reason="network namespaces need root, iproute2 and iptables")


def disconnect_backends(net: netns.Network, nodes: int) -> list[Backend]:
    """A recording backend per node, on the root namespace's end of that node's client link."""
    return [Backend(host=net.root_address(i)) for i in range(nodes)]


def disconnect_events(backends: list[Backend]) -> list[dict]:
    """The `$disconnect` events the nodes sent, all backends together."""
    return [e for b in backends for e in b.all_events if e["requestContext"]["routeKey"] == "$disconnect"]


class Fabric:
    """The network, Redis and the nodes of one test, and every client it opened."""

    def __init__(self):
        self.net = netns.Network(2)
        try:
            self.redis = netns.RedisInNamespace(self.net)
        except Exception:
            self.net.close()
            raise
        self.nodes: list[netns.Node] = []
        self.clients = []
        self.proxy: netns.DelayProxy | None = None

    def start_nodes(self, *extra_per_node, via_proxy: bool = False, ttl: str = TTL) -> list[netns.Node]:
        for i in range(2):
            url = self.proxy.url(i) if via_proxy else self.redis.url(i)
            extra = extra_per_node[i] if extra_per_node else ()
            self.nodes.append(netns.Node(self.net, i, "--redis-url", url, "--node-id", f"node{i}", "--redis-ttl", ttl,
                                         "--management-bearer-token", TOKEN, *extra, binary=BINARY))
        eventually(lambda: all(n.http("/health")[1] == {"status": "ok"} for n in self.nodes), timeout=10, message="nodes healthy")
        return self.nodes

    def client(self, node: netns.Node, user: str, *rooms: str, open_timeout: float = 10):
        ws = connect(f"{node.url}/ws?userId={user}", open_timeout=open_timeout)
        self.clients.append(ws)
        for room in rooms:
            send_json(ws, action="joinRoom", roomId=room)
            wait_for(ws, lambda f: f["action"] == "joinedRoom" and f["roomId"] == room)
        return ws

    def close(self):
        for ws in self.clients:
            try:
                ws.close()
            except Exception:
                pass
        try:
            self.net.close()  # kills Redis, the proxy and the nodes by PID, removes namespaces, links and rules
        finally:
            for node in self.nodes:
                node.log.close()


@pytest.fixture
def fabric():
    f = Fabric()
    try:
        yield f
    finally:
        f.close()


# Helpers -------------------------------------------------------------------------------------------------------------

def wait_for(ws, predicate, timeout=5.0):
    """The first frame matching `predicate`, skipping others; raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        frame = recv_json(ws, timeout=max(0.001, deadline - time.monotonic()))
        if predicate(frame):
            return frame


def message_latency(ws, text, sent_at, timeout=10.0) -> float:
    """Seconds from `sent_at` until `ws` got the room message `text`; inf if not within `timeout`."""
    try:
        wait_for(ws, lambda f: f["action"] == "message" and f["message"] == text, timeout=timeout)
    except TimeoutError:
        return float("inf")
    return time.monotonic() - sent_at


def roundtrip_ok(ws, timeout=3.0) -> bool:
    """The connection is open and served: a ping gets its pong."""
    try:
        send_json(ws, action="ping")
        wait_for(ws, lambda f: f["action"] == "pong", timeout=timeout)
        return True
    except Exception:
        return False


def listing(node, path="/@connections"):
    """Every item of a paged management listing, through `node`."""
    items, cursor = [], None
    while True:
        status, page = node.http(f"{path}?limit=100" + (f"&cursor={cursor}" if cursor else ""), token=TOKEN)
        assert status == 200, (status, page)
        items += page["items"]
        cursor = page.get("next")
        if not cursor:
            return items


def listed_users(node) -> list[str]:
    try:
        return sorted(item["userId"] for item in listing(node))
    except Exception:
        return ["<listing failed>"]


def room_members(node, room) -> list[str]:
    try:
        return sorted(item["userId"] for item in listing(node, f"/@rooms/{room}/members"))
    except Exception:
        return ["<listing failed>"]


def connection_ids(node) -> dict[str, str]:
    return {item["userId"]: item["connectionId"] for item in listing(node)}


def users_left(ws, timeout) -> list[str]:
    """The user ids of the userLeft frames that arrive until none has for `timeout` seconds."""
    left = []
    try:
        while True:
            left.append(wait_for(ws, lambda f: f["action"] == "userLeft", timeout=timeout)["userId"])
    except TimeoutError:
        return left


def health(node, timeout=1.0):
    try:
        return node.http("/health", timeout=timeout)
    except Exception as error:  # a /health that does not answer is a finding too
        return (None, f"no answer: {error!r}")


def time_until(condition, timeout, interval=0.05) -> float:
    """Seconds until `condition()` held; inf if it did not within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(interval)
    return float("inf")


def cross_node_flows(sender, receiver, tag, timeout=10.0, attempt=0.5) -> float:
    """Seconds until a room message from `sender` reaches `receiver` on the other node, sending a fresh one every
    `attempt` seconds (publishes made while Redis was unreachable are dropped by design); inf if none did."""
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        text = f"{tag}-{n}"
        send_json(sender, action="sendMessage", roomId="r", message=text)
        try:
            wait_for(receiver, lambda f: f["action"] == "message" and str(f["message"]).startswith(f"{tag}-"), timeout=attempt)
            return time.monotonic() - start
        except TimeoutError:
            n += 1
    return float("inf")


class HealthWatch:
    """Polls a node's /health every 100 ms in the background from `start()`: when it first stopped being ok."""

    def __init__(self, node):
        self.node, self.first_not_ok, self.answer = node, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set() and self.first_not_ok is None:
            answer = health(self.node)
            if answer[1] != {"status": "ok"}:
                self.first_not_ok, self.answer = time.monotonic() - self.started, answer
            self._stop.wait(0.1)

    def stop(self) -> float:
        """Seconds from start until /health was first not ok; inf if it stayed ok."""
        self._stop.set()
        self._thread.join(timeout=5)
        return float("inf") if self.first_not_ok is None else self.first_not_ok


class Findings:
    """Collects every failed check of a test so one run reports all the figures; the test fails if any failed."""

    def __init__(self):
        self.failures: list[str] = []
        self.figures: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok

    def note(self, figure: str) -> None:
        """A measured figure, printed (pytest -rP shows it) and quoted in the failure message."""
        self.figures.append(figure)
        print(figure)

    def assert_none(self):
        assert not self.failures, "\n" + "\n".join(f"- {f}" for f in self.failures) + \
            ("\nmeasured: " + "; ".join(self.figures) if self.figures else "")


# Tests ---------------------------------------------------------------------------------------------------------------

def test_node_partitioned_from_redis_serves_locally_reports_it_and_rejoins(fabric):
    a, b = fabric.start_nodes()
    alice, amy = fabric.client(a, "alice", "r"), fabric.client(a, "amy", "r")
    bob, bea = fabric.client(b, "bob", "r"), fabric.client(b, "bea", "r")
    ids = connection_ids(b)
    found = Findings()

    # A short partition (1.5 s, well inside the 3 s TTL): nobody sweeps node0, its connections stay registered.
    fabric.net.partition(0)
    sent = time.monotonic()
    send_json(alice, action="sendMessage", roomId="r", message="short")
    took = message_latency(amy, "short", sent, timeout=8)
    found.note(f"same-node latency at the start of a 1.5 s partition {took:.3f} s")
    found.check(took < 1.0, f"same-node message sent as a 1.5 s partition began took {took:.2f} s (bound 1 s)")
    time.sleep(max(0.0, sent + 1.5 - time.monotonic()))
    fabric.net.heal(0)
    healed_at = time.monotonic()
    found.check(cross_node_flows(alice, bob, "short-a2b", timeout=10) < 10, "after the 1.5 s partition no node0 -> node1 message within 10 s")
    found.check(cross_node_flows(bob, amy, "short-b2a", timeout=max(1.0, healed_at + 10 - time.monotonic())) < 10,
                "after the 1.5 s partition no node1 -> node0 message within 10 s")
    registered = time_until(lambda: all(connection_ids(b).get(u) == ids[u] for u in ids) and
                            room_members(b, "r") == ["alice", "amy", "bea", "bob"], timeout=max(1.0, healed_at + 10 - time.monotonic()), interval=0.2)
    found.check(registered != float("inf"), f"after the 1.5 s partition: listing {listed_users(b)}, room r {room_members(b, 'r')}")
    found.check(not [e for e in b.log_events() if e.get("msg") == "sweeping a dead node"],
                "node1 swept node0 after a 1.5 s partition, inside the 3 s TTL")
    found.check(all(roundtrip_ok(ws) for ws in (alice, amy, bob, bea)),
                f"a client lost its connection over a 1.5 s partition: close codes {[ws.close_code for ws in (alice, amy, bob, bea)]}")
    ids = connection_ids(b)

    # A long partition (6 s): node1 sweeps node0 (TTL 3 s) while node0 and its clients are alive.
    fabric.net.partition(0)
    partitioned_at = time.monotonic()
    watch = HealthWatch(a).start()
    # Local delivery on the partitioned node, at once and again later (after its Redis calls have started failing).
    for k, at in enumerate((0.0, 2.0, 4.5)):
        time.sleep(max(0.0, partitioned_at + at - time.monotonic()))
        sent = time.monotonic()
        send_json(alice, action="sendMessage", roomId="r", message=f"local-{k}")
        took = message_latency(amy, f"local-{k}", sent, timeout=8)
        found.note(f"same-node latency {at} s into the 6 s partition {took:.3f} s")
        found.check(took < 1.0, f"same-node message {k} on the partitioned node sent {at} s into the partition took "
                                f"{took:.2f} s (bound 1 s)")
        if k == 0:
            # The other node's clients are unaffected meanwhile.
            sent = time.monotonic()
            send_json(bob, action="sendMessage", roomId="r", message="b-local")
            took_b = message_latency(bea, "b-local", sent, timeout=5)
            found.check(took_b < 1.0, f"same-node message on the healthy node took {took_b:.2f} s (bound 1 s)")
    time.sleep(max(0.0, partitioned_at + 5.0 - time.monotonic()))
    degraded_after, first, answer = watch.stop(), watch.answer, health(a)
    found.note(f"/health first not ok {degraded_after:.2f} s into the partition: {first}; at 5 s: {answer}")
    found.check(degraded_after <= 5.0 and answer[1] == {"status": "degraded", "redis": "unreachable"},
                f"/health of the partitioned node: first not ok {degraded_after:.2f} s into the partition (bound 5 s), "
                f"answer at 5 s {answer}")
    found.check(health(b)[1] == {"status": "ok"}, f"/health of the healthy node during the partition: {health(b)}")
    found.check(all(roundtrip_ok(ws) for ws in (alice, amy, bob, bea)), "a client lost its connection during the partition")
    time.sleep(max(0.0, partitioned_at + 6.0 - time.monotonic()))
    found.check(bool([e for e in b.log_events() if e.get("msg") == "sweeping a dead node"]),
                "node1 did not sweep node0 within a 6 s partition (TTL 3 s)")

    fabric.net.heal(0)
    healed_at = time.monotonic()
    ok_after = time_until(lambda: health(a)[1] == {"status": "ok"}, timeout=10)
    found.note(f"/health ok {ok_after:.2f} s after the heal")
    found.check(ok_after < 10, f"/health of the healed node not ok within 10 s: {health(a)}")
    # node1 ran the $disconnect of node0's connections and told their rooms they left. Consistent outcomes: node0
    # registers them again (same ids), or closes them with 1012 so their clients reconnect; never alive but unlisted.
    time.sleep(1.0)  # a node0 that closes swept connections does so once it is back
    clients = {"alice": alice, "amy": amy}
    for user, ws in list(clients.items()):
        if not roundtrip_ok(ws):
            found.check(ws.close_code == 1012, f"{user} on node0 was closed after the heal with {ws.close_code} "
                                               f"{ws.close_reason!r} (expected open, or 1012 to reconnect)")
            clients[user] = fabric.client(a, user, "r")
    kept = {u for u, ws in clients.items() if ws is (alice if u == "alice" else amy)}
    found.note(f"node0 clients after the heal: {sorted(kept)} kept open, {sorted(set(clients) - kept)} closed and reconnected")
    alice, amy = clients["alice"], clients["amy"]
    a_to_b = cross_node_flows(alice, bob, "a2b", timeout=max(1.0, healed_at + 10 - time.monotonic()))
    found.check(a_to_b < 10, "after the heal a message from node0 did not reach node1 within 10 s")
    b_to_a = cross_node_flows(bob, amy, "b2a", timeout=max(1.0, healed_at + 10 - time.monotonic()))
    found.check(b_to_a < 10, "after the heal a message from node1 did not reach node0 within 10 s")
    registered = time_until(lambda: listed_users(b) == ["alice", "amy", "bea", "bob"] and
                            all(connection_ids(b)[u] == ids[u] for u in kept) and
                            room_members(b, "r") == ["alice", "amy", "bea", "bob"],
                            timeout=max(1.0, healed_at + 10 - time.monotonic()), interval=0.2)
    found.note(f"registered on node1 {time.monotonic() - healed_at:.2f} s after the heal" if registered != float("inf") else "never registered")
    found.check(registered != float("inf"), f"node0's connections ({sorted(kept)} kept open) not registered on node1 "
                                            f"within 10 s of the heal: listing {listed_users(b)}, room r {room_members(b, 'r')}")
    found.check(all(roundtrip_ok(ws) for ws in (alice, amy, bob, bea)), "a client lost its connection")
    found.check(a.alive() and b.alive(), "a node exited")
    found.assert_none()


def test_slow_redis_delays_room_messages_by_one_round_trip_at_most(fabric):
    """A room message waits for its offset from Redis (one round trip), never past the local delivery deadline
    (500 ms); what needs no Redis (a ping) does not wait at all."""
    fabric.proxy = netns.DelayProxy(fabric.net, 0.2)
    a, b = fabric.start_nodes(via_proxy=True)
    sender, local = fabric.client(a, "sender", "r"), fabric.client(a, "local", "r")
    remote = fabric.client(b, "remote", "r")
    found = Findings()

    fabric.proxy.slow()  # every reply and push from Redis to both nodes is held 200 ms
    same, cross = [], []
    for n in range(5):
        sent = time.monotonic()
        send_json(sender, action="sendMessage", roomId="r", message=f"m{n}")
        same.append(message_latency(local, f"m{n}", sent, timeout=5))
        cross.append(message_latency(remote, f"m{n}", sent, timeout=5))  # at least `same`: read after `local`
    pings = []
    for _ in range(5):
        sent = time.monotonic()
        roundtrip_ok(local)
        pings.append(time.monotonic() - sent)
    fabric.proxy.fast()
    figures = f"same-node {[round(s, 3) for s in same]}, cross-node {[round(c, 3) for c in cross]}, ping {[round(p, 3) for p in pings]}"
    found.note(figures)
    found.check(all(c != float("inf") for c in cross), f"a cross-node message was lost: {figures}")
    found.check(statistics.median(cross) >= 0.2, f"cross-node median under the 200 ms Redis delay: {figures}")
    found.check(max(same) < 0.5, f"same-node delivery waited past the 500 ms local deadline: {figures}")
    found.check(statistics.median(pings) < 0.1, f"a ping waited on the slow Redis (bound 100 ms): {figures}")
    found.check(all(roundtrip_ok(ws) for ws in (sender, local, remote)), "a client lost its connection")
    found.check(not [e for n in (a, b) for e in n.log_events() if e.get("msg") == "disconnected"],
                "a node logged a disconnect")
    found.check(listed_users(b) == ["local", "remote", "sender"], f"listing after the delay: {listed_users(b)}")
    found.assert_none()


def test_packet_loss_on_redis_links_leaves_nothing_inconsistent(fabric):
    # A TTL well past the 5 s of loss: the nodes stay alive throughout, so none may be swept (with 3 s, a node
    # whose heartbeats the loss delays past the TTL is rightly swept and its clients told to reconnect).
    a, b = fabric.start_nodes(ttl="12s")
    a1, a2, leaver = (fabric.client(a, u, "r") for u in ("a1", "a2", "leaver"))
    b1 = fabric.client(b, "b1", "r")
    found = Findings()

    fabric.net.lose(0.2)  # 20 % of packets dropped each way on both nodes' Redis links
    try:
        lossy_until = time.monotonic() + 5
        leaver.close()  # its disconnect and leave must still reach the registry
        fabric.clients.remove(leaver)
        try:
            joiner = fabric.client(b, "joiner", "r", open_timeout=5)
        except Exception as error:
            joiner = None
            found.check(False, f"a client could not connect and join during the loss: {error!r}")
        n = 0
        while time.monotonic() < lossy_until:
            send_json(a1, action="sendMessage", roomId="r", message=f"lossy-{n}")
            send_json(b1, action="sendMessage", roomId="r", message=f"lossy-b-{n}")
            n += 1
            time.sleep(0.1)
        dropped = fabric.net.dropped_packets()
        assert dropped > 0, "the loss rules dropped nothing: the test did not test loss"
        found.note(f"{dropped} packets dropped on the Redis links in 5 s")
    finally:
        fabric.net.stop_losing(0.2)
    clients = {"a1": a1, "a2": a2, "b1": b1, **({"joiner": joiner} if joiner else {})}

    found.check(a.alive() and b.alive(), "a node exited during the loss")
    for user, ws in clients.items():
        found.check(roundtrip_ok(ws, timeout=5), f"{user} lost its connection")
    found.check(cross_node_flows(a1, b1, "after-a") < 10, "no node0 -> node1 message within 10 s after the loss")
    found.check(cross_node_flows(b1, a2, "after-b") < 10, "no node1 -> node0 message within 10 s after the loss")
    expected = sorted(clients)
    consistent = time_until(lambda: listed_users(a) == expected and listed_users(b) == expected and
                            room_members(b, "r") == expected, timeout=10, interval=0.2)
    found.check(consistent != float("inf"), f"10 s after the loss the registry disagrees with the {expected} connected: "
                                            f"listing {listed_users(b)}, room r {room_members(b, 'r')}")
    counts = [n.http("/health/websocket")[1].get("connections") for n in (a, b)]
    found.check(counts == [2, 1 + (joiner is not None)], f"/health/websocket connection counts {counts}")
    found.assert_none()


def test_frozen_redis_degrades_health_but_not_local_service(fabric):
    a, b = fabric.start_nodes()
    alice, amy = fabric.client(a, "alice", "r"), fabric.client(a, "amy", "r")
    bob = fabric.client(b, "bob", "r")
    found = Findings()

    fabric.redis.freeze()
    frozen_at = time.monotonic()
    watch = HealthWatch(a).start()
    late = []
    try:
        # A same-node message at once (amy's receipt timed on a thread), and new handshakes meanwhile (before the
        # node can know) and once /health says degraded.
        sent = time.monotonic()
        send_json(alice, action="sendMessage", roomId="r", message="while frozen")
        took = []
        receiver = threading.Thread(target=lambda: took.append(message_latency(amy, "while frozen", sent, timeout=8)))
        receiver.start()
        for user in ("late", "later"):
            if user == "later":
                time_until(lambda: watch.first_not_ok is not None, timeout=max(0.5, frozen_at + 4 - time.monotonic()))
            started = time.monotonic()
            try:
                ws = fabric.client(a, user, open_timeout=10)
                served = roundtrip_ok(ws, timeout=3)
                late.append(user)
            except Exception as error:
                served = False
                found.check(False, f"handshake of {user} with Redis frozen failed: {error!r}")
            handshake = time.monotonic() - started
            found.note(f"handshake + first pong of {user}, {started - frozen_at:.2f} s after SIGSTOP: {handshake:.3f} s")
            found.check(served and handshake < 3.0, f"handshake + first pong of {user} with Redis frozen took "
                                                    f"{handshake:.2f} s (bound 3 s), served={served}")
        receiver.join()
        took = took[0]
        found.note(f"same-node latency with Redis frozen {took:.3f} s")
        found.check(took < 1.0, f"same-node message with Redis frozen took {took:.2f} s (bound 1 s)")
        time_until(lambda: watch.first_not_ok is not None, timeout=max(0.5, frozen_at + 4 - time.monotonic()))
        degraded_after = watch.stop()
        found.note(f"/health first not ok {degraded_after:.2f} s after SIGSTOP: {watch.answer}")
        found.check(degraded_after <= 4.0, f"/health still {health(a)} {time.monotonic() - frozen_at:.2f} s after Redis "
                                           f"froze (bound 4 s)")
        found.check(health(a)[1] == {"status": "degraded", "redis": "unreachable"}, f"/health with Redis frozen: {health(a)}")
        found.check(roundtrip_ok(bob), "a client of the other node was not served with Redis frozen")
    finally:
        fabric.redis.thaw()
    thawed_at = time.monotonic()
    ok_again = time_until(lambda: health(a)[1] == {"status": "ok"} and health(b)[1] == {"status": "ok"}, timeout=10)
    found.check(ok_again < 10, f"/health not ok on both within 10 s of SIGCONT: {health(a)} {health(b)}")
    found.check(cross_node_flows(alice, bob, "thawed", timeout=max(1.0, thawed_at + 10 - time.monotonic())) < 10,
                "no node0 -> node1 message within 10 s of SIGCONT")
    found.check(cross_node_flows(bob, amy, "thawed-b", timeout=max(1.0, thawed_at + 10 - time.monotonic())) < 10,
                "no node1 -> node0 message within 10 s of SIGCONT")
    expected = sorted(["alice", "amy", "bob"] + late)
    listed = time_until(lambda: listed_users(b) == expected, timeout=max(1.0, thawed_at + 10 - time.monotonic()), interval=0.2)
    found.check(listed != float("inf"), f"listing on node1 10 s after SIGCONT: {listed_users(b)} (expected {expected})")
    found.assert_none()


def test_node_killed_while_partitioned_is_swept_once(fabric):
    backends = disconnect_backends(fabric.net, 2)
    try:
        a, b = fabric.start_nodes(*[("--integrations", f"$disconnect={backends[i].url}") for i in range(2)])
        watcher = fabric.client(b, "watcher", "r")
        victims = [fabric.client(a, f"victim{i}", "r") for i in range(2)]
        ids = connection_ids(b)
        victim_ids = {ids["victim0"], ids["victim1"]}
        found = Findings()

        fabric.net.partition(0)
        a.kill()  # SIGKILL while cut off: it can neither unregister nor run a $disconnect
        killed_at = time.monotonic()
        for ws in victims:
            ws.close()
        fabric.net.heal(0)  # the link comes back; the node is gone

        left = []
        deadline = killed_at + 15
        try:
            while len(left) < 2:
                frame = wait_for(watcher, lambda f: f["action"] == "userLeft", timeout=max(0.01, deadline - time.monotonic()))
                left.append(frame["userId"])
        except TimeoutError:
            pass
        found.note(f"userLeft for {left} by {time.monotonic() - killed_at:.2f} s after the kill")
        found.check(sorted(left) == ["victim0", "victim1"],
                    f"userLeft within 15 s of the kill: {left} after {time.monotonic() - killed_at:.1f} s")
        disconnects = time_until(lambda: len(disconnect_events(backends)) >= 2, timeout=max(0.5, deadline - time.monotonic()))
        found.check(disconnects != float("inf"), f"$disconnect events within 15 s: {len(disconnect_events(backends))}")
        time.sleep(2)  # time for a duplicate to show
        more = users_left(watcher, timeout=0.01)
        found.check(not more, f"duplicate userLeft: {more}")
        events = disconnect_events(backends)
        found.check(sorted(e["requestContext"]["connectionId"] for e in events) == sorted(victim_ids),
                    f"$disconnect connection ids {[e['requestContext']['connectionId'] for e in events]}, "
                    f"expected exactly one each for {sorted(victim_ids)}")
        found.check(all(e["requestContext"].get("disconnectStatusCode") == 1006 for e in events),
                    f"$disconnect status codes {[e['requestContext'].get('disconnectStatusCode') for e in events]}")
        found.check(listed_users(b) == ["watcher"], f"listing on the survivor: {listed_users(b)}")
        found.check(room_members(b, "r") == ["watcher"], f"room r members on the survivor: {room_members(b, 'r')}")
        found.check(fabric.redis.cli("HLEN", "switchboard:node-conns:node0") == "0",
                    f"node0's registry hash: {fabric.redis.cli('HLEN', 'switchboard:node-conns:node0')} entries")
        found.check(roundtrip_ok(watcher), "the survivor's client lost its connection")
        found.assert_none()
    finally:
        for backend in backends:
            backend.stop()


def test_a_node_cut_off_past_the_ttl_runs_each_disconnect_once(fabric):
    """node1 sweeps node0 while node0 is only cut off. Whoever removes a connection from node0's registry first runs
    its `$disconnect`: the sweeper for the connections registered before the cut (one that closed during the cut
    waits for Redis, then finds it swept; one still open is closed 1012 when node0 is back), node0 itself for one
    made during the cut (never registered). Exactly one `$disconnect` each, and one userLeft each."""
    backends = disconnect_backends(fabric.net, 2)
    try:
        a, b = fabric.start_nodes(*[("--integrations", f"$disconnect={backends[i].url}") for i in range(2)])
        watcher = fabric.client(b, "watcher", "r")
        stayer, leaver = fabric.client(a, "stayer", "r"), fabric.client(a, "leaver", "r")
        ids = connection_ids(b)
        found = Findings()

        fabric.net.partition(0)
        leaver.close()
        newcomer = fabric.client(a, "newcomer", "r", open_timeout=5)
        newcomer.close()
        swept = time_until(lambda: any(e.get("msg") == "sweeping a dead node" for e in b.log_events()), timeout=10)
        found.check(swept != float("inf"), "node1 never swept the cut-off node0")
        time.sleep(1)  # the sweep's claims and $disconnects
        fabric.net.heal(0)
        healed_at = time.monotonic()
        try:
            stayer.recv(timeout=10)  # userLeft and the like, until the close
            while True:
                stayer.recv(timeout=max(0.01, healed_at + 10 - time.monotonic()))
        except Exception:
            pass
        found.check(stayer.close_code == 1012, f"the swept client still open was closed with {stayer.close_code}, not 1012")
        time.sleep(2)  # time for a duplicate to show
        events = disconnect_events(backends)
        got = sorted(e["requestContext"]["connectionId"] for e in events)
        newcomer_ids = [e["requestContext"]["connectionId"] for e in events if e["requestContext"]["connectionId"] not in ids.values()]
        found.check(len(newcomer_ids) == 1, f"$disconnect events for the connection made during the cut: {len(newcomer_ids)}")
        found.check(sorted(set(got) - set(newcomer_ids)) == sorted([ids["stayer"], ids["leaver"]]) and len(got) == 3,
                    f"$disconnect connection ids {got}: expected exactly one each for stayer, leaver and newcomer")
        left = users_left(watcher, timeout=0.5)
        # The newcomer's own userLeft may cross late, once Redis answers again; the swept two come from the sweep.
        found.check(sorted(u for u in left if u != "newcomer") == ["leaver", "stayer"] and left.count("newcomer") <= 1,
                    f"userLeft on node1: {left}")
        found.check(listed_users(b) == ["watcher"], f"listing after the heal: {listed_users(b)}")
        found.assert_none()
    finally:
        for backend in backends:
            backend.stop()
