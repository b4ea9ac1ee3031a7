"""Socket.IO smoke tests with python-socketio's AsyncClient: polling, WebSocket and the upgrade; rooms, acks, and a
native WebSocket client in the same room (docs/socketio.md)."""
import asyncio
import json
import time

import pytest
import socketio
import websockets

from conftest import Server


async def connect(server: Server, transports, namespace="/", **auth) -> tuple[socketio.AsyncClient, asyncio.Queue]:
    client = socketio.AsyncClient(reconnection=False)
    events: asyncio.Queue = asyncio.Queue()

    @client.on("*", namespace=namespace)
    async def any_event(event, *args):
        await events.put((event, args))

    await client.connect(f"http://127.0.0.1:{server.port}", transports=transports, namespaces=[namespace], auth=auth or None)
    return client, events


async def next_event(events: asyncio.Queue, name: str, timeout=5):
    while True:
        event, args = await asyncio.wait_for(events.get(), timeout)
        if event == name:
            return args


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]])
def test_rooms_and_acks(start_server, transports):
    """Short Engine.IO heartbeats: python-engineio's polling client sometimes drops a `disconnect()` queued while
    a POST is in flight (docs/socketio.md), and then the session ends at its ping timeout instead."""
    server = start_server("--socketio-ping-interval", "1s", "--socketio-ping-timeout", "2s")

    async def scenario():
        alice, alice_events = await connect(server, transports)
        bob, bob_events = await connect(server, transports)
        if transports == ["polling", "websocket"]:
            await asyncio.sleep(0.5)
            assert alice.transport() == "websocket"
        joined = await alice.call("joinRoom", {"roomId": "lobby"}, timeout=5)
        assert joined["action"] == "joinedRoom" and joined["roomId"] == "lobby"
        await bob.emit("joinRoom", {"roomId": "lobby"})
        (reply,) = await next_event(bob_events, "joinedRoom")
        assert reply["memberCount"] == 2
        (presence,) = await next_event(alice_events, "userJoined")
        assert presence["roomId"] == "lobby"
        await bob.emit("sendMessage", {"roomId": "lobby", "message": "hi"})
        (message,) = await next_event(alice_events, "message")
        assert message["message"] == "hi" and message["roomId"] == "lobby"
        pong = await alice.call("ping", timeout=5)
        assert pong["action"] == "pong"
        await alice.disconnect()
        await bob.disconnect()

    asyncio.run(scenario())
    assert len(server.disconnects(at_least=2, timeout=10)) >= 2


def test_mixed_room_with_native_websocket(server):
    async def scenario():
        sio, events = await connect(server, ["websocket"])
        await sio.call("joinRoom", {"roomId": "mixed"}, timeout=5)
        async with websockets.connect(server.url) as ws:
            await ws.send(json.dumps({"action": "joinRoom", "roomId": "mixed"}))
            while json.loads(await ws.recv())["action"] != "joinedRoom":
                pass
            await ws.send(json.dumps({"action": "sendMessage", "roomId": "mixed", "message": "from ws"}))
            (message,) = await next_event(events, "message")
            assert message["message"] == "from ws"
            await sio.emit("sendMessage", {"roomId": "mixed", "message": "from sio"})
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["action"] == "message" and frame["sender"] != "anonymous" or frame.get("message") == "from sio":
                    assert frame["message"] == "from sio"
                    break
        await sio.disconnect()

    asyncio.run(scenario())


def test_unknown_namespace_and_bad_requests(server):
    async def scenario():
        client = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(f"http://127.0.0.1:{server.port}", transports=["websocket"], namespaces=["/nope"])
        await client.disconnect()

    asyncio.run(scenario())
    assert server.http("/socket.io/?EIO=3&transport=polling") == (400, {"code": 5, "message": "Unsupported protocol version"})
    assert server.http("/socket.io/?EIO=4&transport=carrier") == (400, {"code": 0, "message": "Transport unknown"})
    assert server.http("/socket.io/?EIO=4&transport=polling&sid=nope") == (400, {"code": 1, "message": "Session ID unknown"})
    status, body = server.http("/socket.io/?EIO=4&transport=polling")
    assert status == 200 and body.startswith('0{"sid":"')


def test_handshakes_are_bounded_and_their_places_come_back(start_server):
    """A handshake needs no credentials and a polling session holds no socket: the node holds at most
    `limits.max_connections` Engine.IO sessions, refuses more with 503 (a WebSocket open with 1013), and a session
    that never connects a namespace gives its place back at the connect timeout."""
    node = start_server("--limits-max-connections", "3", "--socketio-connect-timeout", "1s")
    for _ in range(3):
        status, body = node.http("/socket.io/?EIO=4&transport=polling")
        assert status == 200 and body.startswith('0{"sid":"'), (status, body)
    status, body = node.http("/socket.io/?EIO=4&transport=polling")
    assert status == 503 and body["message"] == "Too many Engine.IO sessions on this node (at most 3)", (status, body)

    async def websocket_refused():
        async with websockets.connect(f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket") as ws:
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1013

    asyncio.run(websocket_refused())
    deadline = time.monotonic() + 10
    while node.http("/socket.io/?EIO=4&transport=polling")[0] != 200:
        assert time.monotonic() < deadline, "sessions that never connected a namespace were not released"
        time.sleep(0.2)


def test_polling_keeps_its_connection_and_the_upgrade_may_come_on_it(server):
    """Polling requests keep their TCP connection alive, and the upgrade's WebSocket request may arrive on the same
    connection after them, as aiohttp sends it on any pooled connection: it is still upgraded."""
    import base64
    import http.client
    import os

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", "/socket.io/?EIO=4&transport=polling")
    response = connection.getresponse()
    open_packet = response.read().decode()
    assert response.status == 200 and response.getheader("Connection") == "keep-alive"
    sid = json.loads(open_packet[1:])["sid"]
    local = connection.sock.getsockname()
    connection.request("POST", f"/socket.io/?EIO=4&transport=polling&sid={sid}", body="40")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    connection.request("GET", f"/socket.io/?EIO=4&transport=polling&sid={sid}")
    response = connection.getresponse()
    assert response.status == 200 and response.read().decode().startswith("40{")
    assert connection.sock.getsockname() == local  # one TCP connection so far

    # The upgrade on that same connection.
    sock = connection.sock
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = b"2probe"
    mask = os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    frame = sock.recv(2)
    assert frame[0] == 0x81
    assert sock.recv(frame[1]) == b"3probe"
    sock.close()
