"""Socket.IO connection state recovery (docs/socketio.md, "Connection state recovery"), with raw frames: python-socketio
does not implement it, and socket.io-client (which does) needs npm. The frames are the reference client's: the CONNECT
reply carries `pid`, room events carry `"<offset>@<room>"` last, and the reconnecting CONNECT sends `pid` and the
last offset in its `auth`; a reply that repeats the `pid` is what makes socket.io-client set `recovered`."""
import asyncio
import json
import signal
import time
import urllib.request

import pytest
import websockets

from conftest import TOKEN, api
from test_socketio_cluster import handshake, records, request, subscribed

FAST = ("--socketio-ping-interval", "1s", "--socketio-ping-timeout", "1s")
MESSAGE = '42["message",'
RECOVERY = ("--socketio-recovery-window", "30s", "--rooms-presence", "false")


class Native:
    """A seed-protocol WebSocket client in room `room`, sending messages to it."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def joined(cls, port, room, user="native"):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?userId={user}")
        await ws.send(json.dumps({"action": "joinRoom", "roomId": room}))
        while json.loads(await ws.recv())["action"] != "joinedRoom":
            pass
        return cls(ws)

    async def say(self, room, *messages):
        """Sends each and waits for its own copy, so each is in the room's history before the next step."""
        for message in messages:
            await self.ws.send(json.dumps({"action": "sendMessage", "roomId": room, "message": message}))
            while True:
                frame = json.loads(await self.ws.recv())
                if frame["action"] == "message" and frame["message"] == message:
                    break


async def sio(port, connect="40", query=""):
    """An Engine.IO session over a WebSocket that sent `connect`: the socket and the CONNECT reply's JSON."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket{query}")
    assert (await ws.recv()).startswith("0{")
    await ws.send(connect)
    reply = await ws.recv()
    return ws, reply


async def events(ws, count):
    """The next `count` EVENT packets (pings answered)."""
    found = []
    while len(found) < count:
        text = await asyncio.wait_for(ws.recv(), 10)
        if text == "2":
            await ws.send("3")
        elif text.startswith("42"):
            found.append(json.loads(text[2:]))
    return found


def poll(port, sid, count, prefix="4", timeout=20):
    """GETs until `count` records starting with `prefix` came, answering pings: those records."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        status, body = request(port, "GET", sid, timeout=timeout)
        assert status == 200, body
        for record in records(body):
            if record == "2":
                assert request(port, "POST", sid, "3") == (200, "ok")
            elif record.startswith(prefix):
                got.append(record)
    return got


def messages(found):
    """(message, offset argument) of each room message event."""
    return [(event[1]["message"], event[2]) for event in found if event[0] == "message"]


async def joined_socket(port, room):
    ws, reply = await sio(port)
    assert reply.startswith("40{")
    connect = json.loads(reply[2:])
    assert set(connect) == {"sid", "pid"}
    await ws.send("42" + json.dumps(["joinRoom", {"roomId": room}]))
    assert (await events(ws, 1))[0][0] == "joinedRoom"
    return ws, connect


def test_a_dropped_websocket_reconnects_with_its_pid_and_gets_its_id_and_what_it_missed(start_server):
    node = start_server(*RECOVERY)

    async def scenario():
        native = await Native.joined(node.port, "lobby")
        ws, connect = await joined_socket(node.port, "lobby")
        await native.say("lobby", "m1", "m2")
        assert messages(await events(ws, 2)) == [("m1", "1@lobby"), ("m2", "2@lobby")]
        ws.transport.abort()  # the connection drops, no close frame
        await asyncio.sleep(0.3)
        await native.say("lobby", "m3", "m4", "m5")

        again, reply = await sio(node.port, "40" + json.dumps({"pid": connect["pid"], "offset": "2@lobby"}))
        assert json.loads(reply[2:]) == connect  # the same sid and pid: socket.io-client sets `recovered`
        assert messages(await events(again, 3)) == [("m3", "3@lobby"), ("m4", "4@lobby"), ("m5", "5@lobby")]
        await native.say("lobby", "m6")  # and it is back in the room, live
        assert messages(await events(again, 1)) == [("m6", "6@lobby")]
        status, body = api(node, "GET", f"/@connections/{connect['sid']}")
        assert status == 200, body
        await again.close()
        await native.ws.close()

    asyncio.run(scenario())


def test_a_polling_session_that_timed_out_recovers_on_a_new_session(start_server):
    node = start_server(*RECOVERY, *FAST)

    async def scenario():
        native = await Native.joined(node.port, "lobby")
        sid = handshake(node.port)
        assert request(node.port, "POST", sid, "40") == (200, "ok")
        connect = json.loads(poll(node.port, sid, 1)[0][2:])
        assert "pid" in connect
        assert request(node.port, "POST", sid, '42["joinRoom",{"roomId":"lobby"}]') == (200, "ok")
        assert poll(node.port, sid, 1, '42["joinedRoom",')
        await native.say("lobby", "m1")
        assert poll(node.port, sid, 1, MESSAGE)[0].endswith(',"1@lobby"]')
        # The client stops polling: the session ends at its ping timeout (1 s + 1 s), and is left for recovery.
        await asyncio.sleep(3)
        await native.say("lobby", "m2", "m3")

        fresh = handshake(node.port)
        assert request(node.port, "POST", fresh, "40" + json.dumps({"pid": connect["pid"], "offset": "1@lobby"})) == (200, "ok")
        got = poll(node.port, fresh, 3)
        assert json.loads(got[0][2:]) == connect
        assert [(json.loads(record[2:])[1]["message"], json.loads(record[2:])[2]) for record in got[1:3]] == \
            [("m2", "2@lobby"), ("m3", "3@lobby")]
        await native.ws.close()

    asyncio.run(scenario())


def test_a_socket_that_disconnected_itself_or_outlived_the_window_starts_afresh(start_server):
    node = start_server("--socketio-recovery-window", "1s")

    async def scenario():
        ws, reply = await sio(node.port)
        first = json.loads(reply[2:])
        await ws.send("41")  # the client's own DISCONNECT: nothing to recover
        await asyncio.sleep(0.3)
        again, reply = await sio(node.port, "40" + json.dumps({"pid": first["pid"], "offset": "1@lobby"}))
        second = json.loads(reply[2:])
        assert second["sid"] != first["sid"] and second["pid"] != first["pid"]
        again.transport.abort()  # dropped: kept 1 s
        await asyncio.sleep(2)
        late, reply = await sio(node.port, "40" + json.dumps({"pid": second["pid"], "offset": "1@lobby"}))
        assert json.loads(reply[2:])["sid"] != second["sid"]
        for socket in (ws, late):
            await socket.close()

    asyncio.run(scenario())


def test_another_users_reconnect_cannot_take_a_socket(start_server):
    node = start_server(*RECOVERY)

    async def scenario():
        ws, reply = await sio(node.port, "40" + json.dumps({"userId": "alice"}))
        alice = json.loads(reply[2:])
        ws.transport.abort()
        await asyncio.sleep(0.3)
        mallory, reply = await sio(node.port, "40" + json.dumps({"userId": "mallory", "pid": alice["pid"], "offset": "0@x"}))
        assert reply == '44{"message":"Unauthorized: the session to recover belongs to another user"}'
        await asyncio.sleep(0.2)
        # The refused attempt did not use the session up: alice still recovers it.
        back, reply = await sio(node.port, "40" + json.dumps({"userId": "alice", "pid": alice["pid"], "offset": "0@x"}))
        assert json.loads(reply[2:]) == alice
        await back.close()
        # Forged and malformed pids are a fresh socket, never an error.
        for pid in ["x" * 20 + "." + alice["sid"], "../../etc/passwd", "a" * 500, ""]:
            other, reply = await sio(node.port, "40" + json.dumps({"pid": pid, "offset": "1@lobby"}))
            connect = json.loads(reply[2:])
            assert connect["sid"] != alice["sid"] and connect["pid"] != pid
            await other.close()
        await mallory.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("ending", ["dropped", "drained"])
def test_a_socket_recovers_on_another_node(redis, cluster, ending):
    """Over Redis, on the other node: after its connection dropped, and after a rolling deploy's SIGTERM drained its
    node (which ends its sockets with "going away")."""
    a, b = cluster(2, *RECOVERY)
    subscribed(redis)

    async def scenario():
        native = await Native.joined(b.port, "lobby")
        ws, connect = await joined_socket(a.port, "lobby")
        await native.say("lobby", "m1")
        assert messages(await events(ws, 1)) == [("m1", "1@lobby")]
        if ending == "dropped":
            ws.transport.abort()
            await asyncio.sleep(0.5)
        else:
            a.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        await native.say("lobby", "m2")
        again, reply = await sio(b.port, "40" + json.dumps({"pid": connect["pid"], "offset": "1@lobby"}))
        assert json.loads(reply[2:]) == connect
        assert messages(await events(again, 1)) == [("m2", "2@lobby")]
        await native.say("lobby", "m3")
        assert messages(await events(again, 1)) == [("m3", "3@lobby")]
        await again.close()
        await native.ws.close()

    asyncio.run(scenario())


def test_a_polling_client_whose_node_is_killed_recovers_on_the_other(redis, cluster):
    """The node is gone without a word: the reconnect names a socket still registered to it, waits for a survivor to
    sweep the dead node (which leaves its sockets for their reconnects), and recovers."""
    a, b = cluster(2, *RECOVERY, *FAST)
    subscribed(redis)

    async def scenario():
        native = await Native.joined(b.port, "lobby")
        sid = handshake(a.port)
        assert request(a.port, "POST", sid, "40") == (200, "ok")
        connect = json.loads(poll(a.port, sid, 1)[0][2:])
        assert request(a.port, "POST", sid, '42["joinRoom",{"roomId":"lobby"}]') == (200, "ok")
        assert poll(a.port, sid, 1, '42["joinedRoom",')  # in the room (and on its channel) before m1
        await native.say("lobby", "m1")
        assert poll(a.port, sid, 1, MESSAGE)[0].endswith(',"1@lobby"]')
        a.signal(signal.SIGKILL)
        a.process.wait(timeout=5)
        await native.say("lobby", "m2")

        started = time.monotonic()
        fresh = handshake(b.port)
        assert request(b.port, "POST", fresh, "40" + json.dumps({"pid": connect["pid"], "offset": "1@lobby"})) == (200, "ok")
        got = poll(b.port, fresh, 2)
        print("recovered after", time.monotonic() - started, "s")
        assert json.loads(got[0][2:]) == connect
        assert json.loads(got[1][2:])[1]["message"] == "m2" and json.loads(got[1][2:])[2] == "2@lobby"
        await native.ws.close()

    asyncio.run(scenario())
