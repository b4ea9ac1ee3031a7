"""Socket.IO (Engine.IO v4 / Socket.IO v5) on the gateway's port, against the contract of issue 15 (stage 1): the
python-socketio client over each transport, and exact frames from raw HTTP requests and a raw WebSocket.

Python-socketio tests are coroutines run by `aio` (no pytest plugin needed); every client they make is disconnected
when the test ends. Blocking calls (management API, the Backend recorder) run in a thread so the client's own
polling and heartbeats go on meanwhile."""
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import http.client
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import jwt
import pytest
import socketio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect_sync

from backend import Backend
from conftest import ROOT, TOKEN, api, free_port, wait_for_port
from helpers import eventually
from rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RawWebSocket

SECRET = "a-shared-secret-of-at-least-32-bytes!"
MANAGED = ("--management-bearer-token", TOKEN)
CHAT = ("--socketio-namespaces", "/,/chat")
TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": None}  # None: polling, then upgraded


def token(**claims):
    now = int(time.time())
    return jwt.encode({"sub": "alice", "exp": now + 300, "iat": now, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def backend():
    server = Backend()
    yield server
    server.stop()


# python-socketio's AsyncClient


CLIENTS: list["Sio"] = []


def aio(test):
    """Runs a coroutine test (at most 40 s), then disconnects every client it made."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        async def body():
            try:
                await asyncio.wait_for(test(*args, **kwargs), 40)
            finally:
                for client in CLIENTS:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.client.disconnect(), 5)
                CLIENTS.clear()

        asyncio.run(body())

    return run


class Sio:
    """An AsyncClient that records every event, refusal and disconnection it sees, per namespace."""

    def __init__(self):
        self.client = socketio.AsyncClient(reconnection=False)
        self.inbox: asyncio.Queue = asyncio.Queue()  # (namespace, event, args)
        self.refused: dict = {}  # namespace -> CONNECT_ERROR data
        self.gone: asyncio.Queue = asyncio.Queue()  # namespaces the server disconnected
        self.later: list = []  # events of other namespaces that `next` came across
        self.client.on("*", lambda event, namespace, *args: self.inbox.put_nowait((namespace, event, args)), namespace="*")
        self.client.on("connect_error", lambda namespace, *data: self.refused.__setitem__(namespace, data[0] if data else None),
                       namespace="*")
        self.client.on("disconnect", lambda namespace, *reason: self.gone.put_nowait(namespace), namespace="*")
        CLIENTS.append(self)

    async def connect(self, server, transport, namespaces=("/",), query="", **kwargs):
        connecting = self.client.connect(f"http://127.0.0.1:{server.port}/{query}", namespaces=list(namespaces),
                                         transports=TRANSPORTS[transport], wait_timeout=5, **kwargs)
        await asyncio.wait_for(connecting, 10)
        if transport == "upgrade":
            assert self.client.transport() == "websocket"  # the client probes and upgrades inside connect()
        return self

    def sid(self, namespace="/"):
        return self.client.get_sid(namespace)

    async def next(self, event, namespace="/", timeout=5):
        """The argument(s) of the next `event` on `namespace`. Events of other namespaces are kept for later (their
        order relative to this one is not defined); other events of this namespace (presence and the like) are
        skipped."""
        for index, (got_namespace, name, args) in enumerate(self.later):
            if (got_namespace, name) == (namespace, event):
                del self.later[index]
                return args[0] if len(args) == 1 else args
        self.later = [item for item in self.later if item[0] != namespace]
        deadline = time.monotonic() + timeout
        while True:
            item = await asyncio.wait_for(self.inbox.get(), max(0.01, deadline - time.monotonic()))
            got_namespace, name, args = item
            if (got_namespace, name) == (namespace, event):
                return args[0] if len(args) == 1 else args
            if got_namespace != namespace:
                self.later.append(item)

    async def quiet(self, namespace="/"):
        """Nothing else is queued for this namespace: a ping's ack is the next thing, and no event arrived before it."""
        assert (await self.client.call("ping", namespace=namespace, timeout=5))["action"] == "pong"
        pending = [item for item in self.later + drain(self.inbox) if item[0] == namespace]
        assert pending == [], pending


def drain(q: asyncio.Queue) -> list:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


async def blocking(function, *args, **kwargs):
    return await asyncio.to_thread(function, *args, **kwargs)


async def connection(server, cid):
    """GET @connections/{id}: (status, body)."""
    return await blocking(api, server, "GET", f"/@connections/{cid}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_client_connects_to_the_default_and_a_configured_namespace(start_server, transport):
    """Each accepted namespace CONNECT is one Switchboard connection whose id is the socket id of the CONNECT reply."""
    server = start_server(*CHAT, *MANAGED)
    sio = await Sio().connect(server, transport, namespaces=("/", "/chat"), query="?userId=nina")
    root, chat = sio.sid("/"), sio.sid("/chat")
    assert root and chat and root != chat
    status, page = await blocking(api, server, "GET", "/@connections?limit=100")
    assert status == 200
    assert sorted((item["connectionId"], item["userId"]) for item in page["items"]) == sorted([(root, "nina"), (chat, "nina")])
    assert (await server_stats(server))["connections"] == 2
    assert (await sio.client.call("ping", namespace="/chat", timeout=5))["action"] == "pong"


async def server_stats(server):
    return (await blocking(api, server, "GET", "/@stats"))[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_jwt_from_the_connect_packets_auth_token_is_accepted(start_server, transport):
    """With JWT on, `io(url, {auth: {token}})` connects, and the user is the token's subject; so does the query token."""
    server = start_server("--auth-hmac-secret", SECRET, *MANAGED)
    sio = await Sio().connect(server, transport, auth={"token": token(sub="carol")})
    by_query = await Sio().connect(server, transport, query=f"?token={token(sub='dave')}")
    _, page = await blocking(api, server, "GET", "/@connections?limit=100")
    assert sorted((item["connectionId"], item["userId"]) for item in page["items"]) == \
        sorted([(sio.sid(), "carol"), (by_query.sid(), "dave")])
    assert (await sio.client.call("ping", timeout=5))["action"] == "pong"


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_missing_or_bad_jwt_is_a_connect_error_with_the_websocket_paths_reason(start_server, transport):
    """A bad token is CONNECT_ERROR {"message": "Unauthorized: …"} with the reason the WebSocket path's 401 gives;
    nothing is registered. Short heartbeats: python-engineio's polling client can drop the close packet of the
    `disconnect()` its refused `connect()` makes, and then waits for its GET until the next ping (docs/socketio.md,
    known limits)."""
    server = start_server("--auth-hmac-secret", SECRET, *MANAGED, "--socketio-ping-interval", "1s", "--socketio-ping-timeout", "2s")
    with pytest.raises(InvalidStatus) as refused:
        ws_connect_sync(f"{server.url}/ws?token=not-a-jwt")
    websocket_reason = json.loads(refused.value.response.body)["message"]
    assert websocket_reason.startswith("Unauthorized: ")

    bad = Sio()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(server, transport, auth={"token": "not-a-jwt"})
    assert bad.refused["/"] == {"message": websocket_reason}
    expired = Sio()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await expired.connect(server, transport, auth={"token": token(exp=int(time.time()) - 3600)})
    assert expired.refused["/"]["message"].startswith("Unauthorized: ")
    missing = Sio()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await missing.connect(server, transport)
    assert missing.refused["/"]["message"].startswith("Unauthorized: ")
    assert (await server_stats(server))["connections"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_events_drive_the_built_in_routes_and_replies_come_back_as_events(start_server, transport):
    """joinRoom/sendMessage/leaveRoom/ping as events; each reply frame is the event its `action` names."""
    server = start_server()
    sio = await Sio().connect(server, transport, query="?userId=alice")
    await sio.client.emit("joinRoom", {"roomId": "lobby"})
    assert await sio.next("joinedRoom") == {"action": "joinedRoom", "roomId": "lobby", "members": ["alice"],
                                             "memberCount": 1, "offset": 0}
    await sio.client.emit("sendMessage", {"roomId": "lobby", "message": "hi"})
    frame = await sio.next("message")
    assert (frame["action"], frame["roomId"], frame["sender"], frame["message"], frame["offset"]) == \
        ("message", "lobby", "alice", "hi", 1)
    await sio.client.emit("ping")
    pong = await sio.next("pong")
    assert pong["action"] == "pong" and isinstance(pong["timestamp"], int) and pong["timestamp"] > 1.7e12
    await sio.client.emit("leaveRoom", {"roomId": "lobby"})
    await sio.client.emit("sendMessage", {"roomId": "lobby", "message": "after leaving"})
    error = await sio.next("error")
    assert (error["action"], error["message"]) == ("error", "Not in room")


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_an_event_with_an_ack_gets_the_routes_reply_as_the_ack(start_server, transport):
    """`call()` returns the route's reply: ACK 43<id>[<reply>] instead of an event."""
    server = start_server()
    sio = await Sio().connect(server, transport, query="?userId=ann")
    joined = await sio.client.call("joinRoom", {"roomId": "acks"}, timeout=5)
    assert (joined["action"], joined["roomId"], joined["members"]) == ("joinedRoom", "acks", ["ann"])
    pong = await sio.client.call("ping", timeout=5)
    assert pong["action"] == "pong" and isinstance(pong["timestamp"], int)
    error = await sio.client.call("sendMessage", {"roomId": "elsewhere", "message": "x"}, timeout=5)
    assert (error["action"], error["message"]) == ("error", "Not in room")
    assert drain(sio.inbox) == []  # acked replies are not also emitted as events


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_binary_events_reach_the_route_as_binary_messages_and_binary_replies_are_binary_acks(start_server, backend, transport):
    """A BINARY_EVENT whose first argument is bytes is a binary message for the route (isBase64Encoded); a two-way
    route's binary reply is a binary ACK, or without an ack id a binary `message` event."""
    backend.replies["bin"] = lambda event: (200, {"statusCode": 200, "body": base64.b64encode(b"\x01\x02\xfe").decode(),
                                                  "isBase64Encoded": True})
    server = start_server("--integrations", f"bin={backend.url}", "--integration-route-responses", "bin", *MANAGED)
    sio = await Sio().connect(server, transport)
    assert await sio.client.call("bin", b"\x00\x01\xff", timeout=5) == b"\x01\x02\xfe"
    event = await blocking(backend.next, "bin")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x00\x01\xff"
    assert event["requestContext"]["connectionId"] == sio.sid()
    await sio.client.emit("bin", b"\xff" * 3000)
    assert base64.b64decode((await blocking(backend.next, "bin"))["body"]) == b"\xff" * 3000
    assert await sio.next("message") == b"\x01\x02\xfe"
    # A binary post from the management API is a binary event too.
    assert (await blocking(api, server, "POST", f"/@connections/{sio.sid()}", b"\x00\xff"))[0] == 200
    assert await sio.next("message") == b"\x00\xff"


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_two_socketio_clients_share_a_room(start_server, transport):
    """Presence and room messages reach Socket.IO members as events named by the frame's action."""
    server = start_server()
    alice = await Sio().connect(server, transport, query="?userId=alice")
    bob = await Sio().connect(server, transport, auth={"userId": "bob"})
    await alice.client.call("joinRoom", {"roomId": "lobby"}, timeout=5)
    joined = await bob.client.call("joinRoom", {"roomId": "lobby"}, timeout=5)
    assert sorted(joined["members"]) == ["alice", "bob"]
    event = await alice.next("userJoined")
    assert (event["action"], event["roomId"], event["userId"]) == ("userJoined", "lobby", "bob")
    await bob.client.emit("sendMessage", {"roomId": "lobby", "message": {"text": "hi", "n": 1}})
    for sio in (alice, bob):
        frame = await sio.next("message")
        assert (frame["roomId"], frame["sender"], frame["message"], frame["offset"]) == ("lobby", "bob", {"text": "hi", "n": 1}, 1)
    await bob.client.emit("leaveRoom", {"roomId": "lobby"})
    event = await alice.next("userLeft")
    assert (event["roomId"], event["userId"]) == ("lobby", "bob")
    await alice.quiet()


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_management_api_posts_gets_and_deletes_socketio_connections(start_server, transport):
    """POST @connections/{id} emits the push event (`message`) with JSON, text or bytes; GET describes it; @users and
    @broadcast reach every namespace connection; DELETE sends DISCONNECT for that namespace only."""
    server = start_server(*CHAT, *MANAGED)
    sio = await Sio().connect(server, transport, namespaces=("/", "/chat"), auth={"userId": "ann"})
    root, chat = sio.sid("/"), sio.sid("/chat")

    assert (await blocking(api, server, "POST", f"/@connections/{chat}", b'{"hello":"world"}'))[0] == 200
    assert await sio.next("message", "/chat") == {"hello": "world"}
    assert (await blocking(api, server, "POST", f"/@connections/{chat}", b"plain text"))[0] == 200
    assert await sio.next("message", "/chat") == "plain text"
    assert (await blocking(api, server, "POST", f"/@connections/{root}", b'{"action":"custom","n":1}'))[0] == 200
    assert await sio.next("custom") == {"action": "custom", "n": 1}
    await sio.quiet("/")

    status, described = await connection(server, root)
    assert status == 200 and set(described) >= {"connectedAt", "identity", "lastActiveAt"}
    assert described["identity"]["sourceIp"] == "127.0.0.1"

    assert await blocking(api, server, "POST", "/@users/ann", b"for ann") == (200, {"delivered": 2})
    assert await sio.next("message", "/") == "for ann" and await sio.next("message", "/chat") == "for ann"
    assert (await blocking(api, server, "POST", "/@broadcast", b'{"news":1}'))[0] == 200
    assert await sio.next("message", "/") == {"news": 1} and await sio.next("message", "/chat") == {"news": 1}

    assert (await blocking(api, server, "DELETE", f"/@connections/{chat}"))[0] == 204
    assert await asyncio.wait_for(sio.gone.get(), 5) == "/chat"
    assert (await sio.client.call("ping", timeout=5))["action"] == "pong"  # "/" lives on
    await eventually_async(lambda: api(server, "GET", f"/@connections/{chat}")[0] == 410, "chat connection gone")
    assert (await blocking(api, server, "DELETE", f"/@connections/{root}"))[0] == 204
    assert await asyncio.wait_for(sio.gone.get(), 5) == "/"
    await eventually_async(lambda: api(server, "GET", "/@stats")[1]["connections"] == 0, "no connections left")


async def eventually_async(condition, message="condition", timeout=10):
    """`eventually` for a blocking condition, without stopping the event loop."""
    await blocking(eventually, condition, timeout, message)


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_connect_and_disconnect_run_exactly_once_per_namespace(start_server, backend, transport):
    """$connect gets the handshake's query and headers with the socket id as connectionId; $disconnect runs once per
    namespace connection when the client disconnects."""
    server = start_server(*CHAT, "--integrations", f"$connect={backend.url},$disconnect={backend.url}")
    sio = await Sio().connect(server, transport, namespaces=("/", "/chat"), query="?userId=alice&tag=a",
                              headers={"X-Custom": "1"})
    connects = [await blocking(backend.next, "$connect") for _ in range(2)]
    assert sorted(e["requestContext"]["connectionId"] for e in connects) == sorted([sio.sid("/"), sio.sid("/chat")])
    for event in connects:
        assert event["requestContext"]["eventType"] == "CONNECT"
        assert event["queryStringParameters"]["userId"] == "alice" and event["queryStringParameters"]["tag"] == "a"
        assert event["headers"]["X-Custom"] == "1"
    ids = {sio.sid("/"), sio.sid("/chat")}
    await sio.client.disconnect()
    disconnects = [await blocking(backend.next, "$disconnect") for _ in range(2)]
    assert {e["requestContext"]["connectionId"] for e in disconnects} == ids
    assert all(e["requestContext"]["eventType"] == "DISCONNECT" for e in disconnects)
    with pytest.raises(queue.Empty):
        await blocking(backend.next, None, timeout=1.5)  # nothing more: no second $connect or $disconnect


@pytest.mark.parametrize("reply, message", [
    ((200, {"statusCode": 403, "body": "Forbidden by backend"}), "Forbidden by backend"),
    ((200, {"statusCode": 401, "body": json.dumps({"message": "banned"})}), "banned"),
], ids=["text-body", "json-message"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_a_refused_connect_is_a_connect_error_and_registers_nothing(start_server, backend, transport, reply, message):
    """A non-2xx $connect answer: CONNECT_ERROR {"message": the body's message, or the body}; no $disconnect."""
    backend.replies["$connect"] = lambda event: reply
    server = start_server("--integrations", f"$connect={backend.url},$disconnect={backend.url}", *MANAGED)
    sio = Sio()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(server, transport)
    assert sio.refused["/"] == {"message": message}
    await blocking(backend.next, "$connect")
    with pytest.raises(queue.Empty):
        await blocking(backend.next, "$disconnect", timeout=1)
    assert (await server_stats(server))["connections"] == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_events_reach_an_http_integration_as_lambda_proxy_messages(start_server, backend, transport):
    """The event name is the route key; an object argument is the body with "action" added; anything else is
    {"action": name, "data": arg}."""
    server = start_server("--integrations", f"orders={backend.url}")
    sio = await Sio().connect(server, transport)
    await sio.client.emit("orders", {"item": "book", "qty": 2})
    event = await blocking(backend.next, "orders")
    context = event["requestContext"]
    assert (context["routeKey"], context["eventType"], context["connectionId"]) == ("orders", "MESSAGE", sio.sid())
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"item": "book", "qty": 2, "action": "orders"}
    await sio.client.emit("orders", {"action": "kept", "n": 1})
    assert json.loads((await blocking(backend.next, "orders"))["body"]) == {"action": "kept", "n": 1}
    await sio.client.emit("orders", "plain")
    assert json.loads((await blocking(backend.next, "orders"))["body"]) == {"action": "orders", "data": "plain"}
    await sio.client.emit("orders", 42)
    assert json.loads((await blocking(backend.next, "orders"))["body"]) == {"action": "orders", "data": 42}


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_a_two_way_routes_reply_is_the_ack_or_an_event(start_server, backend, transport):
    """A two-way integration's reply: the ACK when the event asked for one (JSON parsed, text as a string); without
    an ack id, the event its `action` names, or the push event `message`."""
    backend.replies["echo"] = lambda event: (200, {"statusCode": 200, "body": json.dumps({"echoed": json.loads(event["body"])})})
    backend.replies["text"] = lambda event: (200, {"statusCode": 200, "body": "just text"})
    backend.replies["named"] = lambda event: (200, {"statusCode": 200, "body": json.dumps({"action": "done", "ok": True})})
    routes = ("echo", "text", "named")
    server = start_server("--integrations", ",".join(f"{r}={backend.url}" for r in routes),
                          "--integration-route-responses", ",".join(routes))
    sio = await Sio().connect(server, transport)
    assert await sio.client.call("echo", {"n": 1}, timeout=5) == {"echoed": {"n": 1, "action": "echo"}}
    assert await sio.client.call("text", timeout=5) == "just text"
    await sio.client.emit("named", {})
    assert await sio.next("done") == {"action": "done", "ok": True}
    await sio.client.emit("echo", {"n": 2})
    assert await sio.next("message") == {"echoed": {"n": 2, "action": "echo"}}


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_native_and_socketio_clients_share_a_room_on_one_node(start_server, transport):
    server = start_server()
    sio = await Sio().connect(server, transport, query="?userId=sio")
    async with ws_connect(f"{server.url}/ws?userId=native") as native:
        await mixed_room(sio, native)


async def mixed_room(sio, native):
    """Both join `mixed`; each one's message reaches the other (and itself)."""
    await native.send(json.dumps({"action": "joinRoom", "roomId": "mixed"}))
    await native_until(native, "joinedRoom")
    joined = await sio.client.call("joinRoom", {"roomId": "mixed"}, timeout=5)
    assert joined["action"] == "joinedRoom" and "sio" in joined["members"]
    assert (await native_until(native, "userJoined"))["userId"] == "sio"
    await native.send(json.dumps({"action": "sendMessage", "roomId": "mixed", "message": "from native"}))
    frame = await sio.next("message")
    assert (frame["sender"], frame["message"]) == ("native", "from native")
    await sio.client.emit("sendMessage", {"roomId": "mixed", "message": "from socket.io"})
    assert (await native_until(native, "message"))["message"] == "from native"
    frame = await native_until(native, "message")
    assert (frame["sender"], frame["message"], frame["roomId"]) == ("sio", "from socket.io", "mixed")
    assert (await sio.next("message"))["message"] == "from socket.io"


async def native_until(ws, action, timeout=5):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("action") == action:
            return frame


@pytest.mark.parametrize("transport", TRANSPORTS)
@aio
async def test_native_and_socketio_clients_share_a_room_across_two_nodes(cluster, transport):
    a, b = cluster()
    sio = await Sio().connect(a, transport, query="?userId=sio")
    async with ws_connect(f"{b.url}/ws?userId=native") as native:
        await mixed_room(sio, native)


@aio
async def test_an_unknown_namespace_is_refused_with_invalid_namespace(start_server):
    server = start_server(*CHAT)
    sio = Sio()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(server, "websocket", namespaces=("/nope",))
    assert sio.refused["/nope"] == {"message": "Invalid namespace"}


@aio
async def test_seed_004_heartbeat_event(start_server):
    """With socketio.heartbeat_event_interval on, each socket gets `heartbeat` {"timestamp": ms since 1970}."""
    server = start_server("--socketio-heartbeat-event-interval", "1")
    sio = await Sio().connect(server, "websocket")
    started = time.monotonic()
    first = await sio.next("heartbeat", timeout=4)
    assert set(first) == {"timestamp"} and abs(first["timestamp"] - time.time() * 1000) < 5000
    second = await sio.next("heartbeat", timeout=4)
    assert second["timestamp"] >= first["timestamp"] + 500 and time.monotonic() - started < 6


@aio
async def test_without_the_option_no_heartbeat_event_is_sent(start_server):
    server = start_server()
    sio = await Sio().connect(server, "websocket")
    await asyncio.sleep(2)  # nothing to await: checking that nothing comes
    assert [item for item in drain(sio.inbox) if item[1] == "heartbeat"] == []


@aio
async def test_a_configured_path_serves_socketio(start_server):
    server = start_server("--socketio-path", "/rt/")
    sio = Sio()
    await sio.client.connect(f"http://127.0.0.1:{server.port}", socketio_path="rt", transports=["polling"], wait_timeout=5)
    assert (await sio.client.call("ping", timeout=5))["action"] == "pong"
    assert eio(server, "EIO=4&transport=polling")[0] != 200


# Raw Engine.IO: exact requests and answers


def eio(server, query, method="GET", body=None, headers=None, path="/socket.io/", timeout=5):
    """One raw HTTP request to the Engine.IO endpoint: (status, headers, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, f"{path}?{query}", body=body.encode() if isinstance(body, str) else body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode(errors="replace")
    finally:
        conn.close()


def handshake(server, headers=None):
    """A polling handshake: (sid, the open packet's JSON)."""
    status, response_headers, body = eio(server, "EIO=4&transport=polling", headers=headers)
    assert status == 200 and body.startswith("0"), (status, body)
    opened = json.loads(body[1:])
    return opened["sid"], opened


def poll(server, sid, timeout=5):
    """One long-poll GET: the packets of its answer."""
    status, headers, body = eio(server, f"EIO=4&transport=polling&sid={sid}", timeout=timeout)
    assert status == 200, (status, body)
    return body.split("\x1e")


def post(server, sid, *packets):
    status, _, body = eio(server, f"EIO=4&transport=polling&sid={sid}", "POST", "\x1e".join(packets))
    assert status == 200 and body.lower() == "ok", (status, body)  # "ok", as the reference server answers


def polling_session(server, namespace="/"):
    """A polling session with `namespace` connected: (engine sid, socket id)."""
    sid, _ = handshake(server)
    post(server, sid, "40" if namespace == "/" else f"40{namespace},")
    [reply] = poll(server, sid)
    kind, got_namespace, _, data = socket_packet(reply)
    assert (kind, got_namespace) == ("0", namespace), reply
    return sid, data["sid"]


SOCKET_PACKET = re.compile(r"^4(\d)(?:\d+-)?(?:(/[^,]*),)?(\d+)?(.*)$", re.S)


def socket_packet(text):
    """An Engine.IO message carrying a Socket.IO packet: (type, namespace, ack id, JSON data or None)."""
    match = SOCKET_PACKET.match(text)
    assert match, text
    kind, namespace, ack, data = match.groups()
    return kind, namespace or "/", ack and int(ack), json.loads(data) if data else None


def unknown_session(server, sid):
    """The session is gone: a GET for it is 400 Session ID unknown (a GET the server holds is not)."""
    try:
        status, _, body = eio(server, f"EIO=4&transport=polling&sid={sid}", timeout=2)
    except TimeoutError:
        return False
    return status == 400 and json.loads(body) == {"code": 1, "message": "Session ID unknown"}


def ws_open(server, query="", **kwargs):
    """A raw WebSocket on the Engine.IO endpoint: (socket, the first text frame)."""
    raw = RawWebSocket(server.port, f"/socket.io/?EIO=4&transport=websocket{query}", **kwargs)
    return raw, ws_text(raw)


def ws_text(raw):
    opcode, payload = raw.recv_data()
    assert opcode == OP_TEXT, (opcode, payload)
    return payload.decode()


def ws_closed(raw):
    """The server ends this WebSocket: a close frame, or the TCP connection closes."""
    try:
        while True:
            opcode, _ = raw.recv_data()
            if opcode == OP_CLOSE:
                return True
    except (EOFError, ConnectionError):
        return True


@pytest.fixture
def raw_sockets():
    made = []
    yield made
    for raw in made:
        raw.close()


def test_polling_handshake_answers_the_open_packet_with_the_defaults(server):
    status, headers, body = eio(server, "EIO=4&transport=polling")
    assert status == 200 and headers["Content-Type"].replace(" ", "").lower() == "text/plain;charset=utf-8"
    assert body[0] == "0"
    opened = json.loads(body[1:])
    assert set(opened) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert isinstance(opened["sid"], str) and opened["sid"]
    assert (opened["upgrades"], opened["pingInterval"], opened["pingTimeout"], opened["maxPayload"]) == \
        (["websocket"], 25000, 20000, 1000000)
    assert handshake(server)[0] != opened["sid"]


def test_open_packet_follows_the_configured_flags(start_server):
    server = start_server("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "2s", "--socketio-max-payload", "5000")
    _, opened = handshake(server)
    assert (opened["pingInterval"], opened["pingTimeout"], opened["maxPayload"]) == (300, 2000, 5000)


def test_websocket_handshake_sends_the_open_packet_first_without_upgrades(server, raw_sockets):
    raw, first = ws_open(server)
    raw_sockets.append(raw)
    assert first.startswith("0")
    opened = json.loads(first[1:])
    assert set(opened) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert (opened["upgrades"], opened["pingInterval"], opened["pingTimeout"], opened["maxPayload"]) == ([], 25000, 20000, 1000000)
    raw.send_text("40")
    kind, namespace, _, data = socket_packet(ws_text(raw))
    assert (kind, namespace) == ("0", "/") and isinstance(data["sid"], str)


def test_a_polling_answer_joins_several_packets_with_the_record_separator(start_server):
    """Packets queued while no GET waits go out together in the next answer, separated by \\x1e."""
    server = start_server(*MANAGED)
    sid, cid = polling_session(server)
    for n in range(3):
        assert api(server, "POST", f"/@connections/{cid}", json.dumps({"n": n}).encode())[0] == 200
    answers = []
    while sum(len(a) for a in answers) < 3:
        answers.append(poll(server, sid))
    assert max(len(a) for a in answers) > 1, answers
    packets = [p for a in answers for p in a]
    assert [socket_packet(p) for p in packets] == [("2", "/", None, ["message", {"n": n}]) for n in range(3)]


def test_binary_travels_as_b_base64_in_polling_both_ways(start_server, backend):
    """A binary post is 451-["message",{"_placeholder":true,"num":0}] then b+base64; a b+base64 attachment from the
    client is the binary message the route gets."""
    server = start_server("--integrations", f"bin={backend.url}", *MANAGED)
    sid, cid = polling_session(server)
    assert api(server, "POST", f"/@connections/{cid}", b"\x00\x01\xff")[0] == 200
    packets = []
    while len(packets) < 2:
        packets += poll(server, sid)
    assert packets[0].startswith("451-") and json.loads(packets[0][4:]) == ["message", {"_placeholder": True, "num": 0}]
    assert packets[1] == "b" + base64.b64encode(b"\x00\x01\xff").decode()

    post(server, sid, '451-["bin",{"_placeholder":true,"num":0}]', "b" + base64.b64encode(b"\x10\x00\x80").decode())
    event = backend.next("bin")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x10\x00\x80"
    assert event["requestContext"]["connectionId"] == cid


def test_probe_and_upgrade_move_the_session_to_the_websocket(server, raw_sockets):
    """2probe → 3probe over the new WebSocket, the pending GET answered 6, then 5: the session is on the WebSocket."""
    sid, cid = polling_session(server)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(poll, server, sid)
        time.sleep(0.3)  # let the GET reach the server and wait there; nothing observable tells us it has
        raw = RawWebSocket(server.port, f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        raw_sockets.append(raw)
        raw.send_text("2probe")
        assert ws_text(raw) == "3probe"
        assert pending.result(timeout=5) == ["6"]
    raw.send_text("5")
    raw.send_text('42["ping"]')
    kind, namespace, _, data = socket_packet(ws_text(raw))
    assert (kind, namespace, data[0], data[1]["action"]) == ("2", "/", "pong", "pong")
    status, _, body = eio(server, f"EIO=4&transport=polling&sid={sid}")
    assert status == 400  # the session is no longer on polling
    assert api(server, "GET", f"/@connections/{cid}")[0] == 200  # and it is the same connection


def test_a_second_concurrent_get_is_refused_and_closes_the_session(server):
    sid, _ = polling_session(server)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(eio, server, f"EIO=4&transport=polling&sid={sid}")
        time.sleep(0.3)  # the first GET is held by the server (nothing is queued); nothing observable says so
        second = pool.submit(eio, server, f"EIO=4&transport=polling&sid={sid}")
        statuses = sorted([first.result(timeout=5)[0], second.result(timeout=5)[0]])
    assert statuses == [200, 400]  # one refused, the other answered as the session closes
    eventually(lambda: unknown_session(server, sid), timeout=5, message="session closed")


def test_unknown_sid_is_400_session_id_unknown(server):
    for method, body in (("GET", None), ("POST", "40")):
        status, _, answer = eio(server, "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", method, body)
        assert (status, json.loads(answer)) == (400, {"code": 1, "message": "Session ID unknown"})
    with pytest.raises(ConnectionError, match="answered 400"):
        RawWebSocket(server.port, "/socket.io/?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA")


@pytest.mark.parametrize("method, query, expected", [
    ("GET", "EIO=3&transport=polling", {"code": 5, "message": "Unsupported protocol version"}),
    ("GET", "EIO=5&transport=polling", {"code": 5, "message": "Unsupported protocol version"}),
    ("GET", "transport=polling", {"code": 5, "message": "Unsupported protocol version"}),
    ("GET", "EIO=4&transport=flashsocket", {"code": 0, "message": "Transport unknown"}),
    ("GET", "EIO=4", {"code": 0, "message": "Transport unknown"}),
    ("PUT", "EIO=4&transport=polling", {"code": 2, "message": "Bad handshake method"}),
    ("POST", "EIO=4&transport=polling", {"code": 2, "message": "Bad handshake method"}),
], ids=["eio-3", "eio-5", "no-eio", "flashsocket", "no-transport", "put-handshake", "post-handshake"])
def test_bad_handshakes_are_400_with_the_engineio_error(server, method, query, expected):
    status, _, body = eio(server, query, method, "" if method != "GET" else None)
    assert (status, json.loads(body)) == (400, expected)


def test_bad_eio_version_refuses_a_websocket_too(server):
    with pytest.raises(ConnectionError, match="answered 400"):
        RawWebSocket(server.port, "/socket.io/?EIO=3&transport=websocket")


@pytest.mark.parametrize("bad", ["9bogus", "42[not json", "47[]"], ids=["engineio-type", "socketio-json", "socketio-type"])
@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_a_bad_packet_closes_the_session_and_runs_disconnect(start_server, backend, raw_sockets, transport, bad):
    server = start_server("--integrations", f"$disconnect={backend.url}")
    if transport == "polling":
        sid, cid = polling_session(server)
        eio(server, f"EIO=4&transport=polling&sid={sid}", "POST", bad)  # answered ok or 400: either way the end
        eventually(lambda: unknown_session(server, sid), timeout=5, message="session closed")
    else:
        raw, _ = ws_open(server)
        raw_sockets.append(raw)
        raw.send_text("40")
        cid = socket_packet(ws_text(raw))[3]["sid"]
        raw.send_text(bad)
        assert ws_closed(raw)
    assert backend.next("$disconnect")["requestContext"]["connectionId"] == cid


def test_more_than_ten_attachments_close_the_session(server, raw_sockets):
    """The attachment count of one binary packet is bounded (10): an eleventh is a bad packet."""
    raw, _ = ws_open(server)
    raw_sockets.append(raw)
    raw.send_text("40")
    socket_packet(ws_text(raw))
    placeholders = [{"_placeholder": True, "num": n} for n in range(11)]
    raw.send_text("4511-" + json.dumps(["bin", *placeholders]))
    with contextlib.suppress(OSError):  # the server may already have closed at the header
        for _ in range(11):
            raw.send_frame(OP_BINARY, b"\x00")
    assert ws_closed(raw)


def test_a_post_over_max_payload_is_413(start_server):
    server = start_server("--socketio-max-payload", "2000")
    sid, _ = polling_session(server)
    post(server, sid, '42["ping",' + json.dumps({"pad": "x" * 1900}) + "]")
    status, _, _ = eio(server, f"EIO=4&transport=polling&sid={sid}", "POST", '42["ping",' + json.dumps({"pad": "x" * 2100}) + "]")
    assert status == 413


def test_pings_arrive_on_time_over_websocket_and_a_silent_client_is_closed(start_server, backend, raw_sockets):
    """pingInterval 300ms: a ping about every 300 ms while answered; no pong within pingTimeout closes the session
    and runs $disconnect."""
    server = start_server("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "300ms",
                          "--integrations", f"$disconnect={backend.url}")
    raw, _ = ws_open(server)
    opened = time.monotonic()
    raw_sockets.append(raw)
    raw.send_text("40")
    cid = socket_packet(ws_text(raw))[3]["sid"]
    assert ws_text(raw) == "2"
    assert 0.15 < time.monotonic() - opened < 1.5
    raw.send_text("3")
    pinged = time.monotonic()
    assert ws_text(raw) == "2"
    assert 0.15 < time.monotonic() - pinged < 1.5
    pinged = time.monotonic()  # not answered
    assert ws_closed(raw)
    assert 0.15 < time.monotonic() - pinged < 2.5
    assert backend.next("$disconnect")["requestContext"]["connectionId"] == cid


def test_a_held_poll_is_answered_with_the_ping_and_a_silent_client_is_closed(start_server, backend):
    server = start_server("--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "300ms",
                          "--integrations", f"$disconnect={backend.url}")
    sid, cid = polling_session(server)
    started = time.monotonic()
    assert poll(server, sid) == ["2"]  # held until the ping is due
    assert time.monotonic() - started < 1.5
    post(server, sid, "3")
    assert poll(server, sid) == ["2"]
    pinged = time.monotonic()
    eventually(lambda: unknown_session(server, sid), timeout=5, message="session closed for want of a pong")
    assert time.monotonic() - pinged < 3
    assert backend.next("$disconnect")["requestContext"]["connectionId"] == cid


def test_an_unknown_namespace_is_connect_error_and_the_session_stays(start_server, raw_sockets):
    server = start_server(*CHAT)
    raw, _ = ws_open(server)
    raw_sockets.append(raw)
    raw.send_text("40/nope,")
    assert socket_packet(ws_text(raw)) == ("4", "/nope", None, {"message": "Invalid namespace"})
    raw.send_text("40/chat,")
    kind, namespace, _, data = socket_packet(ws_text(raw))
    assert (kind, namespace) == ("0", "/chat") and data["sid"]


def test_a_refused_token_leaves_the_engineio_session_open_for_another_try(start_server, raw_sockets):
    server = start_server("--auth-hmac-secret", SECRET)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect_sync(f"{server.url}/ws?token=not-a-jwt")
    reason = json.loads(refused.value.response.body)["message"]
    raw, _ = ws_open(server)
    raw_sockets.append(raw)
    raw.send_text('40{"token":"not-a-jwt"}')
    assert socket_packet(ws_text(raw)) == ("4", "/", None, {"message": reason})
    raw.send_text("40" + json.dumps({"token": token(sub="erin")}))
    kind, _, _, data = socket_packet(ws_text(raw))
    assert kind == "0" and data["sid"]


def test_a_disconnect_packet_ends_only_that_namespaces_connection(start_server, backend, raw_sockets):
    server = start_server(*CHAT, "--integrations", f"$disconnect={backend.url}")
    raw, _ = ws_open(server)
    raw_sockets.append(raw)
    raw.send_text("40")
    raw.send_text("40/chat,")
    sids = dict((packet[1], packet[3]["sid"]) for packet in (socket_packet(ws_text(raw)) for _ in range(2)))
    raw.send_text("41/chat,")
    assert backend.next("$disconnect")["requestContext"]["connectionId"] == sids["/chat"]
    raw.send_text('421["ping"]')
    kind, namespace, ack, data = socket_packet(ws_text(raw))
    assert (kind, namespace, ack, data[0]["action"]) == ("3", "/", 1, "pong")
    raw.close()  # closing the Engine.IO session ends the rest
    assert backend.next("$disconnect")["requestContext"]["connectionId"] == sids["/"]


def test_management_delete_sends_disconnect_for_that_namespace(start_server, raw_sockets):
    server = start_server(*CHAT, *MANAGED)
    raw, _ = ws_open(server)
    raw_sockets.append(raw)
    raw.send_text("40/chat,")
    cid = socket_packet(ws_text(raw))[3]["sid"]
    assert api(server, "DELETE", f"/@connections/{cid}")[0] == 204
    assert ws_text(raw) == "41/chat,"


# CORS for polling


ALLOWED, OTHER = "https://app.example.com", "https://evil.example.net"


def test_an_allowed_origin_is_echoed_with_credentials(start_server):
    server = start_server("--origins-allowed", ALLOWED)
    status, headers, body = eio(server, "EIO=4&transport=polling", headers={"Origin": ALLOWED})
    assert status == 200 and body.startswith("0")
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in [v.strip().lower() for v in ",".join(headers.get_all("Vary") or []).split(",")]
    sid = json.loads(body[1:])["sid"]
    status, headers, body = eio(server, f"EIO=4&transport=polling&sid={sid}", "POST", "40", headers={"Origin": ALLOWED})
    assert (status, body, headers["Access-Control-Allow-Origin"]) == (200, "ok", ALLOWED)


def test_preflight_answers_204_with_methods_and_the_requested_headers(start_server):
    server = start_server("--origins-allowed", ALLOWED)
    status, headers, _ = eio(server, "EIO=4&transport=polling", "OPTIONS", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-custom, content-type"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == ALLOWED and headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "x-custom, content-type"


def test_a_disallowed_origin_is_403_on_every_request(start_server):
    server = start_server("--origins-allowed", ALLOWED)
    status, headers, body = eio(server, "EIO=4&transport=polling", headers={"Origin": OTHER})
    assert (status, json.loads(body)) == (403, {"code": 4, "message": "Forbidden"})
    assert headers.get("Access-Control-Allow-Origin") in (None, "")
    sid, _ = handshake(server, headers={"Origin": ALLOWED})
    for method, body in (("GET", None), ("POST", "40")):
        status, _, answer = eio(server, f"EIO=4&transport=polling&sid={sid}", method, body, headers={"Origin": OTHER})
        assert (status, json.loads(answer)) == (403, {"code": 4, "message": "Forbidden"})
    status, _, _ = eio(server, "EIO=4&transport=polling", "OPTIONS", headers={"Origin": OTHER, "Access-Control-Request-Method": "POST"})
    assert status == 403
    with pytest.raises(ConnectionError, match="answered 403"):
        RawWebSocket(server.port, "/socket.io/?EIO=4&transport=websocket", headers={"Origin": OTHER})


def test_without_an_allowlist_any_origin_is_echoed_never_a_star(server):
    status, headers, _ = eio(server, "EIO=4&transport=polling", headers={"Origin": OTHER})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == OTHER
    assert headers["Access-Control-Allow-Credentials"] == "true"


def test_a_post_waits_while_its_namespace_awaits_a_backend(start_server, backend):
    """A polling client's POSTs were answered at once even while a namespace waited on a slow backend, so it could
    queue events on the node without bound. Now a POST waits (one at most), as a WebSocket's reads pause, and is
    handled in order once the backend answers."""
    release = threading.Event()
    backend.replies["slow"] = lambda event: (release.wait(10), (200, {"statusCode": 200}))[1]
    server = start_server("--integrations", f"slow={backend.url}")
    sid, _ = polling_session(server)
    post(server, sid, '42["slow",{"n":1}]')
    assert json.loads(backend.next("slow")["body"])["n"] == 1
    answers = []
    second = threading.Thread(target=lambda: answers.append(eio(server, f"EIO=4&transport=polling&sid={sid}", "POST",
                                                                '42["slow",{"n":2}]', timeout=15)))
    second.start()
    second.join(1)
    assert second.is_alive(), "the POST was answered while the backend call was in flight"
    release.set()
    second.join(10)
    assert answers and answers[0][0] == 200 and answers[0][2].lower() == "ok", answers
    assert json.loads(backend.next("slow")["body"])["n"] == 2


@aio
async def test_the_seed_004_example_runs(start_server):
    """examples/socketio-chat: its config, backend and client, as its README runs them. The client (alice) joins,
    gets its `typing` acked by the backend, and sends; bob, in the same room, hears the backend's `typing` and
    alice's message; a banned user is refused by the backend's `$connect`; heartbeats arrive."""
    example = ROOT / "examples/socketio-chat"
    secret = "change-me-to-a-secret-of-at-least-32-bytes"
    backend_port = free_port()
    url = f"http://127.0.0.1:{backend_port}/"
    server = start_server("--config", str(example / "switchboard.yaml"), "--integrations", f"$connect={url},typing={url}",
                          "--socketio-heartbeat-event-interval", "1s")
    backend = subprocess.Popen([sys.executable, str(example / "backend.py"), str(backend_port),
                                f"http://127.0.0.1:{server.port}", "local-management-token"])
    try:
        await blocking(wait_for_port, backend_port)
        token_for = lambda user: jwt.encode({"sub": user, "exp": int(time.time()) + 300}, secret, algorithm="HS256")
        bob = await Sio().connect(server, "websocket", namespaces=("/chat",), auth={"token": token_for("bob")})
        assert (await bob.client.call("joinRoom", {"roomId": "lobby"}, namespace="/chat", timeout=5))["action"] == "joinedRoom"
        assert "timestamp" in await bob.next("heartbeat", namespace="/chat")
        alice = await asyncio.create_subprocess_exec(sys.executable, str(example / "client.py"), f"http://127.0.0.1:{server.port}",
                                                     "alice", secret, stdout=asyncio.subprocess.PIPE)
        output, _ = await asyncio.wait_for(alice.communicate(), 20)
        assert alice.returncode == 0, output
        assert "typing acked: {'ok': True, 'roomId': 'lobby'}" in output.decode(), output
        assert await bob.next("typing", namespace="/chat") == {"action": "typing", "roomId": "lobby", "userId": "alice"}
        message = await bob.next("message", namespace="/chat")
        assert (message["message"], message["sender"]) == ("hello from alice", "alice")
        banned = Sio()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await banned.connect(server, "websocket", namespaces=("/chat",), auth={"token": token_for("banned")})
        assert banned.refused["/chat"] == {"message": "This user is banned"}
    finally:
        backend.send_signal(signal.SIGKILL)
        backend.wait(timeout=10)
