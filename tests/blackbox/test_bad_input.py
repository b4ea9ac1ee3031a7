"""Hostile and broken clients: each gets a precise close code or status, and nobody else notices."""
import json
import socket
import time

import pytest
from rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from websockets.sync.client import connect

from helpers import eventually, recv_json, run_bench, send_json



@pytest.fixture
def bystander(server):
    """A well-behaved client in a room, checked after each abuse to have lost nothing."""
    with connect(f"{server.url}/ws?userId=bystander") as ws:
        send_json(ws, action="joinRoom", roomId="room")
        assert recv_json(ws)["action"] == "joinedRoom"
        yield ws
        send_json(ws, action="sendMessage", roomId="room", message="still here")
        frame = recv_json(ws)
        while frame["action"] in ("userJoined", "userLeft"):
            frame = recv_json(ws)
        assert frame["message"] == "still here"


@pytest.mark.parametrize(
    "frames, code",
    [
        ([(OP_TEXT, b"\xc3\x28", {})], 1007),
        ([(OP_TEXT, b"ok \xe2\x82", {"fin": False}), (OP_CONT, b"\x28", {})], 1007),
        ([(OP_TEXT, b"x", {"mask": False})], 1002),
        ([(OP_TEXT, b"x", {"rsv": 4})], 1002),
        ([(3, b"", {})], 1002),
        ([(OP_CONT, b"x", {})], 1002),
        ([(OP_TEXT, b"a", {"fin": False}), (OP_TEXT, b"b", {})], 1002),
        ([(OP_PING, b"x" * 126, {})], 1002),
        ([(OP_PING, b"", {"fin": False})], 1002),
        ([(OP_CLOSE, b"\x03", {})], 1002),
        ([(OP_CLOSE, b"\x03\xed", {})], 1002),
        ([(OP_CLOSE, b"\x03\xe8\xff\xfe", {})], 1007),
        ([(OP_TEXT, b"x" * ((1 << 20) + 1), {})], 1009),
        ([(OP_TEXT, b"x" * 700_000, {"fin": False}), (OP_CONT, b"x" * 700_000, {})], 1009),
    ],
    ids=[
        "invalid-utf8", "invalid-utf8-fragmented", "unmasked", "reserved-bits", "reserved-opcode", "orphan-continuation",
        "interleaved-message", "long-ping", "fragmented-ping", "one-byte-close", "close-code-1005", "close-reason-not-utf8",
        "frame-too-big", "message-too-big",
    ],
)
def test_protocol_violations_close_with_the_right_code(server, bystander, rawws_factory, frames, code):
    ws = rawws_factory(server.port, "/ws?userId=bad")
    ws.send_text(json.dumps({"action": "joinRoom", "roomId": "room"}))
    assert json.loads(ws.recv_data()[1])["action"] == "joinedRoom"
    for opcode, payload, options in frames:
        try:
            ws.send_frame(opcode, payload, **options)
        except (BrokenPipeError, ConnectionResetError):
            break
    assert ws.expect_close()[0] == code
    # Completing the close handshake makes the server end the TCP connection at once (a reset when it left
    # unread bytes behind, as after an oversized frame).
    ws.sock.settimeout(2)
    try:
        ws.send_frame(OP_CLOSE, b"\x03\xe8")
        assert ws.sock.recv(1) == b""
    except ConnectionResetError:
        pass
    event = recv_json(bystander)
    assert (event["action"], event["userId"]) in (("userJoined", "bad"), ("userLeft", "bad"))
    if event["action"] == "userJoined":
        assert recv_json(bystander)["action"] == "userLeft"


def test_binary_frames_can_be_rejected_with_1003(start_server, rawws_factory):
    server = start_server("--binary-frames", "reject")
    ws = rawws_factory(server.port)
    ws.send_frame(OP_BINARY, b"\x00\x01")
    assert ws.expect_close()[0] == 1003


def test_pings_from_the_client_get_pongs_with_the_same_payload(server, rawws_factory):
    ws = rawws_factory(server.port)
    ws.send_frame(OP_PING, b"hello")
    assert ws.recv_frame() == (OP_PONG, b"hello")


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            400,
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage that is not http\r\n\r\n", 400),
        (b"GET /metrics/nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ],
    ids=["missing-key", "wrong-version", "not-http", "unknown-path"],
)
def test_bad_handshakes_get_a_status_and_the_server_stays_up(server, request_bytes, status):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request_bytes)
        response = sock.recv(4096)
    assert response.startswith(f"HTTP/1.1 {status}".encode()), response
    assert server.http("/health")[0] == 200


def test_slow_consumer_is_closed_without_hurting_others(start_server, rawws_factory):
    server = start_server("--limits-outbound-queue-bytes", "64KiB", "--limits-max-message-bytes", "16KiB")
    slow = rawws_factory(server.port, "/ws?userId=slow")
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send_text(json.dumps({"action": "joinRoom", "roomId": "firehose"}))
    slow.recv_data()
    # The sender and the reader buffer everything they receive (max_queue=None): they never stop reading.
    with (
        connect(f"{server.url}/ws?userId=sender", max_queue=None) as sender,
        connect(f"{server.url}/ws?userId=reader", max_queue=None) as reader,
    ):
        for ws in (sender, reader):
            send_json(ws, action="joinRoom", roomId="firehose")
            recv_json(ws)
        recv_json(sender)  # reader's userJoined
        payload = "x" * 8000
        sent, received, left = 0, 0, []

        def read_until(count):
            nonlocal received
            while received < count:
                frame = recv_json(reader)
                received += frame["action"] == "message"
                left.extend([frame["userId"]] if frame["action"] == "userLeft" else [])

        # Kernel buffers on loopback absorb megabytes before the gateway's own queue fills, so send until the slow
        # client is dropped (bounded at 40 MB), while the reader keeps up.
        while "slow" not in left and sent < 5000:
            for _ in range(50):
                send_json(sender, action="sendMessage", roomId="firehose", message=payload)
            sent += 50
            read_until(sent)
        assert "slow" in left, "the slow consumer was never closed"
        for _ in range(50):
            send_json(sender, action="sendMessage", roomId="firehose", message=payload)
        read_until(sent + 50)
        assert left == ["slow"]
    assert any(code == 1008 and reason.startswith("slow consumer") for code, reason in server.disconnects(at_least=2))


def test_dead_peer_is_dropped_after_the_pong_timeout(start_server, rawws_factory):
    server = start_server("--heartbeat-ping-interval", "200ms", "--heartbeat-pong-timeout", "1s")
    with connect(f"{server.url}/ws?userId=alive") as alive:
        send_json(alive, action="joinRoom", roomId="r")
        recv_json(alive)
        dead = rawws_factory(server.port, "/ws?userId=dead")
        dead.send_text(json.dumps({"action": "joinRoom", "roomId": "r"}))
        assert recv_json(alive)["action"] == "userJoined"
        # `dead` never reads again, so it never answers the pings; `alive` (websockets) answers them.
        event = recv_json(alive, timeout=5)
        assert (event["action"], event["userId"]) == ("userLeft", "dead")
        time.sleep(1.5)
        send_json(alive, action="ping")
        assert recv_json(alive)["action"] == "pong"
    assert any(code == 1006 and reason.startswith("no pong within") for code, reason in server.disconnects(at_least=2))


def test_many_abrupt_disconnects_leave_no_connection_behind(server, rawws_factory):
    for index in range(50):
        ws = rawws_factory(server.port, f"/ws?userId=u{index}")
        ws.send_text(json.dumps({"action": "joinRoom", "roomId": "churn"}))
        ws.close()
    eventually(lambda: server.http("/health/websocket")[1]["connections"] == 0, timeout=5, message="connections gone")
    status, body = server.http("/health/websocket")
    assert body["connections"] == 0 and body["connectionsAccepted"] == 50


def test_closed_connections_give_their_memory_back(server):
    """Rounds of connects and clean closes (switchboard-bench churn) leave the server's memory where it was: a
    handler that outlived its channel would keep about 1 KB per connection ever served."""
    result = run_bench("churn", "--url", f"{server.url}/ws", "--pid", str(server.process.pid), "--rounds", "6", "--count", "800",
                       "--rate", "2000")
    assert result["failed"] == 0, result
    idle = result["rss_idle_kib"]
    # A leak adds ~1,600 KiB every round, 4,800 over the last three; the allocator may step up once by about 1 MiB
    # (a new arena, a grown table) and then stay, which is not a leak.
    assert idle[5] - idle[2] < 1600, f"resident KiB after each round: {idle}"
