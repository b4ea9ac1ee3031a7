"""permessage-deflate (RFC 7692): negotiation answers, compressed traffic both ways, a room of compressed and plain
members, and the hostile cases (a zip bomb, invalid deflate data, RSV1 where it may not be)."""
import json
import os
import zlib

import pytest
from websockets.sync.client import connect

from helpers import recv_until, send_json
from rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT

BOTH = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
CHAT = json.dumps({"text": "the quick brown fox jumps over the lazy dog " * 40, "n": 1})  # about 1.8 KB, compressible


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """A message as a client compresses it: raw deflate, sync flush, the 00 00 ff ff tail dropped (§7.2.1)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    return zlib.decompressobj(-wbits).decompress(payload + b"\x00\x00\xff\xff")


def recv_frame_json(ws) -> dict:
    """The next data message as JSON, inflated when it came compressed."""
    _, payload, compressed = recv_data_message(ws)
    return json.loads(inflate(payload) if compressed else payload)


@pytest.fixture
def raw(rawws_factory):
    """A raw client that offers `extensions` (or nothing) and reads the server's frames as they are."""

    def make(port: int, extensions: str | None = BOTH, path: str = "/ws"):
        headers = {"Sec-WebSocket-Extensions": extensions} if extensions is not None else {}
        return rawws_factory(port, path, headers=headers)

    return make


def recv_data_message(ws) -> tuple[int, bytes, bool]:
    """One whole data message: opcode, the payload bytes as they came, whether its first frame had RSV1."""
    opcode, payload = ws.recv_data()
    while opcode == 0xA:  # a pong
        opcode, payload = ws.recv_data()
    rsv1 = ws.last_rsv & 0x4 != 0
    while not ws.last_fin and opcode != OP_CLOSE:
        more_opcode, more = ws.recv_data()
        assert more_opcode == OP_CONT
        payload += more
    return opcode, payload, rsv1


@pytest.mark.parametrize(
    "offer, answer",
    [
        ("permessage-deflate; client_max_window_bits", BOTH),  # Chrome, Firefox, Safari
        ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", BOTH + "; server_max_window_bits=12"),
        ("permessage-deflate; client_no_context_takeover; client_max_window_bits", BOTH),  # Autobahn
        ("permessage-deflate; server_max_window_bits=8", BOTH + "; server_max_window_bits=8"),
        ("permessage-deflate; server_max_window_bits=16, permessage-deflate", BOTH),  # the first offer is invalid
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; no_such_parameter", None),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
        (None, None),
    ],
)
def test_negotiation_answers(server, raw, offer, answer):
    ws = raw(server.port, offer)
    assert ws.status == 101
    assert ws.headers.get("sec-websocket-extensions") == answer


def test_python_websockets_negotiates_and_echoes_through_compression(start_server):
    server = start_server("--routes", "$default=echo")
    with connect(server.url) as ws:  # websockets offers permessage-deflate by default
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        for message in (CHAT, "small", CHAT.encode(), os.urandom(3000), ""):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_messages_from_the_threshold_up_are_compressed(start_server, raw):
    server = start_server("--routes", "$default=echo", "--compression-threshold-bytes", "100")
    ws = raw(server.port)
    ws.send_frame(OP_TEXT, CHAT.encode())
    opcode, payload_bytes, compressed = recv_data_message(ws)
    assert (opcode, compressed) == (OP_TEXT, True)
    assert len(payload_bytes) < len(CHAT) / 4
    assert inflate(payload_bytes) == CHAT.encode()
    ws.send_frame(OP_TEXT, b"x" * 99)  # under the threshold: sent as it is
    assert recv_data_message(ws) == (OP_TEXT, b"x" * 99, False)
    noise = os.urandom(2000)  # deflate would not shrink it: sent as it is
    ws.send_frame(OP_BINARY, noise)
    assert recv_data_message(ws) == (OP_BINARY, noise, False)
    # The metrics tell payload bytes from what went on the wire.
    from test_observability import scrape, value

    samples = scrape(server)
    payload = value(samples, "switchboard_message_bytes_sent_total")
    wire = value(samples, "switchboard_wire_bytes_sent_total")
    assert payload == len(CHAT) + 99 + 2000
    assert wire == len(payload_bytes) + 2 + (99 + 2) + (2000 + 4)


def test_with_no_threshold_every_message_that_shrinks_is_compressed(start_server):
    server = start_server("--routes", "$default=echo", "--compression-threshold-bytes", "0")
    with connect(server.url) as ws:
        for message in ("", "a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", b"", CHAT):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_compressed_messages_from_the_client_in_one_or_several_frames(start_server, raw):
    server = start_server("--routes", "$default=echo")
    ws = raw(server.port)
    body = deflate(CHAT.encode())
    ws.send_frame(OP_TEXT, body, rsv=4)
    assert inflate(recv_data_message(ws)[1]) == CHAT.encode()
    # Fragmented: RSV1 on the first frame only, a ping between the fragments.
    third = len(body) // 3
    ws.send_frame(OP_TEXT, body[:third], fin=False, rsv=4)
    ws.send_frame(0x9, b"p")
    ws.send_frame(OP_CONT, body[third : 2 * third], fin=False)
    ws.send_frame(OP_CONT, body[2 * third :])
    assert inflate(recv_data_message(ws)[1]) == CHAT.encode()
    # A client may also send any message uncompressed.
    ws.send_frame(OP_TEXT, CHAT.encode())
    assert inflate(recv_data_message(ws)[1]) == CHAT.encode()


def test_a_window_the_client_limits_is_respected(start_server, raw):
    server = start_server("--routes", "$default=echo")
    ws = raw(server.port, "permessage-deflate; server_max_window_bits=9")
    big = json.dumps([f"item {i} of a list that repeats itself a lot" for i in range(400)]).encode()
    ws.send_frame(OP_TEXT, big)
    opcode, payload, compressed = recv_data_message(ws)
    assert compressed
    assert zlib.decompressobj(-9).decompress(payload + b"\x00\x00\xff\xff") == big  # would fail with a larger window
    # zlib cannot deflate with a 256-byte window: such a client gets every message uncompressed.
    ws8 = raw(server.port, "permessage-deflate; server_max_window_bits=8")
    ws8.send_frame(OP_TEXT, big)
    assert recv_data_message(ws8) == (OP_TEXT, big, False)


def test_a_room_of_compressed_and_plain_members_gets_the_same_messages(start_server, raw):
    # Two event loops: the compressed bytes are made once for both loops' members.
    server = start_server("--event-loops", "2")
    members = [raw(server.port, BOTH) for _ in range(4)] + [raw(server.port, None) for _ in range(4)]
    with connect(server.url) as sender, connect(server.url, compression=None) as plain_sender:
        for ws in members:
            ws.send_text(json.dumps({"action": "joinRoom", "roomId": "mixed"}))
            while recv_frame_json(ws)["action"] != "joinedRoom":
                pass
        for client in (sender, plain_sender):
            send_json(client, action="joinRoom", roomId="mixed")
            recv_until(client, "joinedRoom")
        send_json(sender, action="sendMessage", roomId="mixed", message=CHAT)
        assert recv_until(plain_sender, "message")["message"] == CHAT  # two senders: the order is ours to make
        send_json(plain_sender, action="sendMessage", roomId="mixed", message="short")
        wire = []
        for ws in members:
            frames = []
            while len(frames) < 2:
                opcode, payload, compressed = recv_data_message(ws)
                frame = json.loads(inflate(payload) if compressed else payload)
                if frame["action"] == "message":
                    frames.append((frame["message"], compressed, payload))
            assert [message for message, _, _ in frames] == [CHAT, "short"]
            assert frames[0][1] == (ws.headers.get("sec-websocket-extensions") is not None)
            assert frames[1][1] is False  # under the threshold
            wire.append(frames[0][2])
        # Every compressed member got the very same bytes: deflated once, not per member.
        assert len(set(wire[:4])) == 1 and len(set(wire[4:])) == 1
        assert recv_until(sender, "message")["message"] == CHAT


def test_a_zip_bomb_closes_with_1009_without_inflating_it(start_server, raw):
    server = start_server("--routes", "$default=echo", "--limits-max-message-bytes", "1MiB")
    bomb = deflate(b"\0" * (256 << 20))  # 256 MiB of zeros in about 256 KB
    assert len(bomb) < 300_000
    ws = raw(server.port)
    ws.send_frame(OP_BINARY, bomb, rsv=4)
    assert ws.expect_close() == (1009, "message exceeds 1048576 bytes")
    # The node is fine, its memory did not follow the bomb, and others are served.
    status = open(f"/proc/{server.process.pid}/status").read()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    assert peak_kib < 150_000, f"peak resident memory {peak_kib} KiB"
    with connect(server.url) as ws:
        ws.send(CHAT)
        assert ws.recv(timeout=5) == CHAT


def test_a_message_that_inflates_to_exactly_the_limit_is_accepted(start_server, raw):
    server = start_server("--routes", "$default=echo", "--limits-max-message-bytes", "4096")
    ws = raw(server.port)
    ws.send_frame(OP_TEXT, deflate(b"a" * 4096), rsv=4)
    assert inflate(recv_data_message(ws)[1]) == b"a" * 4096
    ws.send_frame(OP_TEXT, deflate(b"a" * 4097), rsv=4)
    assert ws.expect_close() == (1009, "message exceeds 4096 bytes")


@pytest.mark.parametrize(
    "frames, close",
    [
        ([(OP_TEXT, b"\xff\xff\xff", True, 4)], (1007, "compressed message is not valid deflate data")),
        ([(OP_TEXT, deflate(b"\xc3\x28"), True, 4)], (1007, "text message is not valid UTF-8")),
        ([(0x9, b"", True, 4)], (1002, "RSV1 set on a control or continuation frame")),
        ([(OP_TEXT, deflate(b"ab")[:1], False, 4), (OP_CONT, deflate(b"ab")[1:], True, 4)], (1002, "RSV1 set on a control or continuation frame")),
        ([(OP_TEXT, b"x", True, 2)], (1002, "reserved bits set without a negotiated extension")),
    ],
)
def test_bad_compressed_input_closes_the_connection_only(start_server, raw, frames, close):
    server = start_server("--routes", "$default=echo")
    ws = raw(server.port)
    bystander = raw(server.port)
    for opcode, payload, fin, rsv in frames:
        ws.send_frame(opcode, payload, fin=fin, rsv=rsv)
    assert ws.expect_close() == close
    bystander.send_text("still here")
    assert recv_data_message(bystander)[1] == b"still here"


def test_rsv1_without_negotiation_and_compression_turned_off(start_server, raw):
    server = start_server("--routes", "$default=echo", "--compression-enabled", "false")
    ws = raw(server.port, "permessage-deflate; client_max_window_bits")
    assert "sec-websocket-extensions" not in ws.headers
    ws.send_frame(OP_TEXT, deflate(b"hello"), rsv=4)
    assert ws.expect_close() == (1002, "reserved bits set without a negotiated extension")
    with connect(server.url) as client:
        client.send(CHAT)
        assert client.recv(timeout=5) == CHAT  # websockets falls back to no compression
