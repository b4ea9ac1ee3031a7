"""Socket.IO across nodes without sticky sessions (docs/socketio.md, "Several nodes"): two nodes over a real
redis-server, haproxy round robin in front with no stickiness, python-socketio over polling, and raw Engine.IO
requests sent to each node with the same sid."""
import asyncio
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import socketio
import websockets

from backend import Backend
from conftest import TOKEN
from helpers import eventually

FAST = ("--socketio-ping-interval", "1s", "--socketio-ping-timeout", "1s")


@pytest.fixture
def backend():
    server = Backend()
    yield server
    server.stop()


def request(port, method, sid=None, body=None, timeout=10, headers=None):
    """A raw Engine.IO polling request to one node: (status, body text)."""
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/socket.io/?{query}", data=body.encode() if body is not None else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def relays(node):
    """switchboard_socketio_relays_total by outcome, from the node's /metrics."""
    req = urllib.request.Request(f"http://127.0.0.1:{node.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("switchboard_socketio_relays_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = int(float(line.split()[-1]))
    return counts


def subscribed(redis, count=2):
    """Waits until every node listens on its node channel (a node subscribes just after it starts listening)."""
    def ready():
        reply = redis.cli("PUBSUB", "NUMSUB", *[f"switchboard:ch:node:node{i}" for i in range(count)]).split()
        return all(n == "1" for n in reply[1::2])
    eventually(ready, message="node channels subscribed")


def handshake(port):
    status, body = request(port, "GET")
    assert status == 200 and body.startswith("0"), body
    return json.loads(body[1:])["sid"]


def upgraded(node, sid):
    """A WebSocket on `node` that probed and completed the session's upgrade (`2probe`, `3probe`, `5`)."""
    from websockets.sync.client import connect as ws_connect

    ws = ws_connect(f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket&sid={sid}")
    ws.send("2probe")
    assert ws.recv(timeout=5) == "3probe"
    ws.send("5")
    return ws


def records(body):
    return body.split("\x1e")


# python-socketio through haproxy


@pytest.mark.parametrize("transports", [["polling"], None])
def test_python_socketio_through_round_robin_without_stickiness(redis, cluster, haproxy, backend, transports):
    nodes = cluster(2, *FAST, "--integrations", f"$disconnect={backend.url}")
    subscribed(redis)
    port = haproxy(*nodes)

    async def scenario():
        client = socketio.AsyncClient(reconnection=False)
        events: asyncio.Queue = asyncio.Queue()

        @client.on("*")
        async def any_event(event, *args):
            await events.put((event, args))

        async def next_event(name, timeout=10):
            while True:
                event, args = await asyncio.wait_for(events.get(), timeout)
                if event == name:
                    return args

        await asyncio.wait_for(client.connect(f"http://127.0.0.1:{port}", transports=transports, auth={"userId": "sio"}), 10)
        if transports is None:  # the upgrade's WebSocket reaches either node: relayed when it is not the owner
            await asyncio.sleep(1)
            assert client.transport() == "websocket"
        owner = client.eio.sid.split("~")[0]
        assert owner in ("node0", "node1")
        other = nodes[1] if owner == "node0" else nodes[0]
        connection_id = client.get_sid("/")
        joined = await client.call("joinRoom", {"roomId": "lobby"}, timeout=10)
        assert joined["action"] == "joinedRoom" and joined["roomId"] == "lobby"
        async with websockets.connect(f"{other.url}/ws?userId=native") as ws:
            await ws.send(json.dumps({"action": "joinRoom", "roomId": "lobby"}))
            while json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] != "joinedRoom":
                pass
            (presence,) = await next_event("userJoined")
            assert presence["userId"] == "native"
            for n in range(5):
                await ws.send(json.dumps({"action": "sendMessage", "roomId": "lobby", "message": f"from ws {n}"}))
            for n in range(5):
                (message,) = await next_event("message")
                assert message["message"] == f"from ws {n}"
            for n in range(5):
                reply = await client.call("sendMessage", {"roomId": "lobby", "message": f"from sio {n}"}, timeout=10)
                assert reply is None or reply == [] or reply == ()  # acknowledged empty
            seen = []
            while len(seen) < 5:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["action"] == "message" and frame["message"].startswith("from sio"):
                    seen.append(frame["message"])
            assert seen == [f"from sio {n}" for n in range(5)]
            pong = await client.call("ping", timeout=10)
            assert pong["action"] == "pong"
            # Long enough for several pings: the session stays up over relayed polls.
            await asyncio.sleep(3)
            assert client.connected
            pong = await client.call("ping", timeout=10)
            assert pong["action"] == "pong"
        await client.disconnect()
        return connection_id

    connection_id = asyncio.run(asyncio.wait_for(scenario(), 60))
    if transports == ["polling"]:
        # The session's requests landed on both nodes: the other node forwarded some, its owner served them.
        counts = [relays(node) for node in nodes]
        assert any(c.get("forwarded", 0) > 0 for c in counts) and any(c.get("served", 0) > 0 for c in counts), counts

    def ours():
        return [e for e in backend.all_events if e["requestContext"]["routeKey"] == "$disconnect"
                and e["requestContext"]["connectionId"] == connection_id]

    # python-engineio sometimes drops the disconnect it queued behind a POST (docs/socketio.md): then the session
    # ends at its ping timeout (2 s here).
    eventually(lambda: len(ours()) >= 1, timeout=10, message="$disconnect ran")
    time.sleep(1.5)
    assert len(ours()) == 1  # exactly once, whichever node the requests landed on


# Raw Engine.IO requests sent to each node with the same sid


def test_one_session_served_by_both_nodes(redis, cluster):
    a, b = cluster(2, "--socketio-max-payload", "5000")
    subscribed(redis)
    sid = handshake(a.port)
    assert sid.startswith("node0~")  # the sid names its owner
    # The namespace CONNECT posted to the other node, its answer polled from the other node too.
    assert request(b.port, "POST", sid, "40") == (200, "ok")
    status, body = request(b.port, "GET", sid)
    assert status == 200 and body.startswith("40{"), body
    # An event posted to the owner, its answer read on the other node; and the reverse.
    assert request(a.port, "POST", sid, '42["ping"]') == (200, "ok")
    status, body = request(b.port, "GET", sid)
    assert status == 200 and '"pong"' in body, body
    assert request(b.port, "POST", sid, '421["ping"]') == (200, "ok")
    status, body = request(a.port, "GET", sid)
    assert status == 200 and body.startswith('431[{"action":"pong"'), body
    # A GET held on the owner for a relayed request, answered when a POST (to the owner) brings packets.
    result = {}
    thread = threading.Thread(target=lambda: result.update(get=request(b.port, "GET", sid)))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # waiting for packets
    assert request(a.port, "POST", sid, '42["ping"]') == (200, "ok")
    thread.join(10)
    assert result["get"][0] == 200 and '"pong"' in result["get"][1]
    # Body bound: max_payload applies on the requesting node, before anything is relayed.
    status, _ = request(b.port, "POST", sid, "4" + "x" * 6000)
    assert status == 413
    # Close from the other node: the session ends on its owner.
    assert request(b.port, "POST", sid, "1") == (200, "ok")
    eventually(lambda: request(a.port, "GET", sid)[0] == 400, message="session closed on its owner")
    assert relays(b)["forwarded"] == 6 and relays(a)["served"] == 6  # every request sent to b


def test_upgrade_on_the_other_node_is_relayed(redis, cluster):
    a, b = cluster(2)
    subscribed(redis)
    sid = handshake(a.port)
    assert request(b.port, "POST", sid, "40") == (200, "ok")
    assert request(a.port, "GET", sid)[0] == 200
    with upgraded(b, sid) as ws:
        ws.send('421["ping"]')
        assert ws.recv(timeout=5).startswith('431[{"action":"pong"')
        # Polling is over for this session, on either node.
        assert request(a.port, "POST", sid, '42["ping"]')[0] == 400
        ws.send('42["ping"]')
        frame = ws.recv(timeout=5)
        assert frame.startswith('42["pong"'), frame
        assert relays(b)["websocket"] == 1
    # The client closed: the session ends on its owner.
    eventually(lambda: request(a.port, "GET", sid)[0] == 400, timeout=5, message="session closed on its owner")


def test_owner_killed_relayed_websocket_closes(redis, cluster):
    a, b = cluster(2, *FAST)
    subscribed(redis)
    sid = handshake(a.port)
    assert request(b.port, "POST", sid, "40") == (200, "ok")
    assert request(a.port, "GET", sid)[0] == 200
    with upgraded(b, sid) as ws:
        assert ws.recv(timeout=5) == "2"  # the owner's ping, relayed
        ws.send("3")
        a.signal(signal.SIGKILL)
        a.process.wait(timeout=5)
        started = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            while True:
                ws.recv(timeout=15)
        assert time.monotonic() - started < 1 + 1 + 5 + 2  # closed at the relay timeout, not left open


def test_unknown_and_forged_sids(redis, cluster):
    a, b = cluster(2)
    subscribed(redis)
    sid = handshake(a.port)
    # The named node does not know it.
    forged = "node0~" + "B" * 15 + "="
    assert request(b.port, "GET", forged)[0] == 400
    assert "Session ID unknown" in request(b.port, "POST", forged, "40")[1]
    # No node listens on the named node's channel: answered at once, not at the timeout.
    started = time.monotonic()
    status, body = request(b.port, "GET", "ghost~" + "C" * 15 + "=")
    assert (status, json.loads(body)["message"]) == (400, "Session ID unknown")
    assert time.monotonic() - started < 2
    assert relays(b)["owner_gone"] == 1
    # Malformed sids are simply unknown.
    for bad in ("~", "node0~", "no-separator", "node0~bad!", "x" * 200 + "~" + "A" * 15 + "="):
        assert request(b.port, "GET", bad)[0] == 400
    # The real session is untouched.
    assert request(b.port, "POST", sid, "40") == (200, "ok")


def test_aborted_relayed_poll_is_forgotten_by_the_owner(redis, cluster):
    a, b = cluster(2)
    subscribed(redis)
    sid = handshake(a.port)
    assert request(b.port, "POST", sid, "40") == (200, "ok")
    assert request(a.port, "GET", sid)[0] == 200
    # A GET relayed from b, its client gone before the answer.
    with socket.create_connection(("127.0.0.1", b.port)) as s:
        s.sendall(f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
    # The owner heard of it at once, as of a local GET whose connection closed: the session ends ("poll connection
    # closed prematurely", as the reference server does), long before its ping timeout (25 s).
    # (A POST sooner could still answer the GET before the owner hears of the close: its packets are lost with it.)
    time.sleep(0.5)
    assert request(a.port, "POST", sid, '42["ping"]')[0] == 400


def test_owner_killed_relayed_requests_end_with_400(redis, cluster):
    a, b = cluster(2, *FAST)
    subscribed(redis)
    sid = handshake(a.port)
    assert request(b.port, "POST", sid, "40") == (200, "ok")
    assert request(b.port, "GET", sid)[0] == 200
    # Keep the session alive while a relayed GET waits on the owner, then kill the owner.
    result = {}

    def poll():
        started = time.monotonic()
        result["get"] = request(b.port, "GET", sid, timeout=30)
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    a.signal(signal.SIGKILL)
    a.process.wait(timeout=5)
    thread.join(20)
    assert not thread.is_alive(), "the relayed GET hung"
    status, body = result["get"]
    # Answered with the ping (the owner pinged before it died) or, at most the relay timeout later, 400.
    if status == 200:
        status, body = request(b.port, "GET", sid, timeout=20)
    assert status == 400 and json.loads(body)["message"] == "Session ID unknown"
    assert result["elapsed"] < 1 + 1 + 5 + 2  # ping interval + ping timeout + 5 s, and slack
    print("relayed GET on a killed owner ended after", result["elapsed"], relays(b))
    assert relays(b).get("timeout", 0) + relays(b).get("owner_gone", 0) >= 1
    # Later requests: nobody listens on the owner's channel any more, answered at once.
    started = time.monotonic()
    assert request(b.port, "POST", sid, '42["ping"]')[0] == 400
    assert time.monotonic() - started < 2
