"""The seed protocol (DESIGN §3) over real WebSocket connections."""
import contextlib
import json
import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import assert_quiet, recv_json, recv_until, send_json




def test_ping_answers_pong_with_a_millisecond_timestamp(server):
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, action="ping")
        frame = recv_json(ws)
        assert frame["action"] == "pong" and isinstance(frame["timestamp"], int) and frame["timestamp"] > 1.7e12


@pytest.mark.parametrize("path", ["/", "/ws", "/prod", "/prod/ws"])
def test_every_websocket_path_serves_the_protocol(server, path):
    with connect(f"{server.url}{path}") as ws:
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"


def test_rooms_join_send_leave(server):
    with connect(f"{server.url}/ws?userId=alice") as alice, connect(f"{server.url}/ws?userId=bob") as bob:
        send_json(alice, action="joinRoom", roomId="lobby")
        assert recv_json(alice) == {"action": "joinedRoom", "roomId": "lobby", "members": ["alice"], "memberCount": 1, "offset": 0}
        send_json(bob, action="joinRoom", roomId="lobby")
        joined = recv_json(bob)
        assert joined["action"] == "joinedRoom" and sorted(joined["members"]) == ["alice", "bob"]
        event = recv_json(alice)
        assert (event["action"], event["roomId"], event["userId"]) == ("userJoined", "lobby", "bob")

        send_json(bob, action="sendMessage", roomId="lobby", message={"text": "hi", "n": 12345678901234567890})
        for ws in (alice, bob):
            frame = recv_json(ws)
            assert frame["action"] == "message" and frame["sender"] == "bob" and frame["roomId"] == "lobby"
            assert frame["message"] == {"text": "hi", "n": 12345678901234567890}
            assert isinstance(frame["timestamp"], int) and frame["offset"] == 1

        send_json(bob, action="leaveRoom", roomId="lobby")
        event = recv_json(alice)
        assert (event["action"], event["userId"]) == ("userLeft", "bob")
        send_json(bob, action="sendMessage", roomId="lobby", message="x")
        assert recv_json(bob)["message"] == "Not in room"
        send_json(bob, action="leaveRoom", roomId="lobby")
        assert recv_json(bob)["message"] == "Not in room"
        assert_quiet(alice)


def test_a_connection_can_be_in_many_rooms(server):
    with connect(f"{server.url}/ws?userId=alice") as alice, connect(f"{server.url}/ws?userId=bob") as bob:
        for room in ("a", "b", "c"):
            send_json(alice, action="joinRoom", roomId=room)
            recv_json(alice)
        send_json(bob, action="joinRoom", roomId="b")
        recv_json(bob)
        assert recv_json(alice)["action"] == "userJoined"
        for room in ("a", "c", "b"):
            send_json(alice, action="sendMessage", roomId=room, message=room)
            assert recv_json(alice)["roomId"] == room
        frame = recv_json(bob)
        assert (frame["roomId"], frame["message"]) == ("b", "b")
        assert_quiet(bob)


def test_messages_right_after_join_are_handled_in_order(server):
    with connect(f"{server.url}/ws?userId=alice") as alice:
        # Pipelined: the send must see the join that precedes it.
        alice.send(json.dumps({"action": "joinRoom", "roomId": "r"}))
        alice.send(json.dumps({"action": "sendMessage", "roomId": "r", "message": 1}))
        alice.send(json.dumps({"action": "ping"}))
        assert [recv_json(alice)["action"] for _ in range(3)] == ["joinedRoom", "message", "pong"]


def test_joined_room_member_list_is_capped_with_a_total(start_server):
    server = start_server("--rooms-max-members-listed", "2")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{server.url}/ws?userId=u{i}")) for i in range(4)]
        for ws in clients:
            send_json(ws, action="joinRoom", roomId="big")
            frame = recv_json(ws)
            while frame["action"] != "joinedRoom":
                frame = recv_json(ws)
        assert len(frame["members"]) == 2 and frame["memberCount"] == 4


def test_presence_can_be_switched_off(start_server):
    server = start_server("--rooms-presence", "false")
    with connect(f"{server.url}/ws?userId=a") as a, connect(f"{server.url}/ws?userId=b") as b:
        send_json(a, action="joinRoom", roomId="quiet")
        recv_json(a)
        send_json(b, action="joinRoom", roomId="quiet")
        recv_json(b)
        b.close()
        assert_quiet(a)


def test_default_route_errors_name_the_problem(server):
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, action="dance")
        frame = recv_json(ws)
        assert frame["action"] == "error" and frame["message"] == "Unknown action: dance" and isinstance(frame["timestamp"], int)
        ws.send("not json")
        assert recv_json(ws)["message"] == "Invalid JSON"
        send_json(ws, type="x")
        assert recv_json(ws)["message"] == "Missing action"
        send_json(ws, action="joinRoom")
        assert recv_json(ws)["message"] == "roomId required"
        send_json(ws, action="joinRoom", roomId="bad room!")
        assert "letters, digits" in recv_json(ws)["message"]
        send_json(ws, action="sendMessage", roomId="r")
        assert recv_json(ws)["message"] == "roomId and message required"
        ws.send("[" * 5000 + "]" * 5000)
        assert recv_json(ws)["message"] == "Invalid JSON"
        ws.send(b"\x00\x01")
        assert recv_json(ws)["message"] == "Binary frames are not supported by this route"
        assert_quiet(ws)


def test_echo_route_returns_the_same_bytes_and_opcode(start_server):
    server = start_server("--routes", "$default=echo")
    with connect(f"{server.url}/ws", max_size=None) as ws:
        for message in ("plain text", '{"action":"anything"}', b"\x00\xffbinary", "é" * 70000, bytes(range(256)) * 4000):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_custom_route_selection_expression(start_server):
    server = start_server("--route-selection-expression", "$request.body.meta.kind", "--routes", "hello=ping,$default=unknownAction")
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, meta={"kind": "hello"})
        assert recv_json(ws)["action"] == "pong"
        send_json(ws, meta={"kind": "other"})
        assert recv_json(ws)["message"] == "Unknown action: other"
        send_json(ws, action="ping")
        assert recv_json(ws)["message"] == "Missing action"


def test_welcome_frame_is_opt_in(start_server):
    server = start_server("--welcome-frame")
    with connect(f"{server.url}/ws?userId=carol") as ws:
        frame = recv_json(ws)
        assert frame["action"] == "connected" and frame["userId"] == "carol" and len(frame["connectionId"]) == 16
    with connect(f"{start_server().url}/ws") as ws:
        assert_quiet(ws)


@pytest.mark.parametrize("how", ["close", "drop"])
def test_disconnect_runs_exactly_once_and_tells_the_room(server, rawws_factory, how):
    with connect(f"{server.url}/ws?userId=stay") as stay:
        send_json(stay, action="joinRoom", roomId="r")
        recv_json(stay)
        leaver = rawws_factory(server.port, "/ws?userId=leaver")
        leaver.send_text(json.dumps({"action": "joinRoom", "roomId": "r"}))
        leaver.recv_data()
        assert recv_json(stay)["action"] == "userJoined"
        if how == "close":
            leaver.send_frame(0x8, b"\x03\xe8bye")
            assert leaver.expect_close() == (1000, "")
        leaver.close()
        event = recv_json(stay)
        assert (event["action"], event["userId"]) == ("userLeft", "leaver")
        assert_quiet(stay)
    codes = [code for code, _ in server.disconnects(at_least=2)]
    assert codes.count(1006) == (0 if how == "close" else 1) and 1000 in codes


def test_rejected_connect_answers_status_and_reason(server):
    with pytest.raises(InvalidStatus) as rejected:
        connect(f"{server.url}/ws?userId=bad%20user")
    assert rejected.value.response.status_code == 400
    assert b"userId may contain only" in rejected.value.response.body
    status, body = server.http("/health/websocket")
    assert body["connections"] == 0 and body["connectionsAccepted"] == 0


def test_health_endpoints(server):
    assert server.http("/health") == (200, {"status": "ok"})
    status, body = server.http("/health/websocket")
    assert status == 200
    assert body["status"] == "healthy" and body["websocket"] == "available" and body["endpoint"] == "/ws"
    assert set(body["features"]) == {"heartbeat", "stickySession", "authentication", "widgetSupport", "reconnection"}
    with connect(f"{server.url}/ws"):
        assert server.http("/health/websocket")[1]["connections"] == 1
    assert server.http("/health/nope")[0] == 404
    assert server.http("/ws") == (426, {"message": "This is a WebSocket endpoint: connect with a WebSocket client (ws://host:port/ws)"})


def test_connection_ids_are_unique_and_url_safe(start_server):
    server = start_server("--welcome-frame")
    ids = set()
    for _ in range(20):
        with connect(f"{server.url}/ws") as ws:
            ids.add(recv_json(ws)["connectionId"])
    assert len(ids) == 20
    assert all(set(i[:-1]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for i in ids)


def test_server_close_is_seen_by_the_client(start_server):
    server = start_server("--heartbeat-idle-timeout", "500ms")
    with connect(f"{server.url}/ws") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001 and closed.value.rcvd.reason == "idle timeout"


def test_rejoining_with_the_last_offset_recovers_missed_messages(server):
    with connect(f"{server.url}/ws?userId=writer") as writer:
        send_json(writer, action="joinRoom", roomId="log")
        recv_json(writer)
        with connect(f"{server.url}/ws?userId=reader") as reader:
            send_json(reader, action="joinRoom", roomId="log")
            recv_json(reader)
            send_json(writer, action="sendMessage", roomId="log", message="seen")
            seen = recv_until(reader, "message")
        for n in range(3):  # while the reader is away
            send_json(writer, action="sendMessage", roomId="log", message=f"missed {n}")
        with connect(f"{server.url}/ws?userId=reader") as reader:
            send_json(reader, action="joinRoom", roomId="log", lastOffset=seen["offset"])
            joined = recv_json(reader)
            assert joined["action"] == "joinedRoom" and joined["offset"] == seen["offset"] + 3
            recovered = [recv_json(reader) for _ in range(3)]
            assert [m["message"] for m in recovered] == ["missed 0", "missed 1", "missed 2"]
            assert [m["offset"] for m in recovered] == [seen["offset"] + 1, seen["offset"] + 2, seen["offset"] + 3]
            assert_quiet(reader)


def test_a_gap_older_than_the_history_says_history_lost(start_server):
    server = start_server("--rooms-history-messages", "2")
    with connect(f"{server.url}/ws?userId=w") as writer:
        send_json(writer, action="joinRoom", roomId="short")
        recv_json(writer)
        for n in range(5):
            send_json(writer, action="sendMessage", roomId="short", message=n)
        with connect(f"{server.url}/ws?userId=r") as reader:
            send_json(reader, action="joinRoom", roomId="short", lastOffset=1)
            assert recv_json(reader)["offset"] == 5
            lost = recv_json(reader)
            assert (lost["action"], lost["roomId"], lost["lastOffset"], lost["oldestOffset"]) == ("historyLost", "short", 1, 4)


def test_a_second_node_on_the_same_port_refuses_to_start(start_server):
    """One listener per event loop shares the port with SO_REUSEPORT; a plain bind first makes a second node on the
    same port fail instead of silently splitting the traffic."""
    import subprocess
    from conftest import BINARY
    server = start_server("--event-loops", "2")
    second = subprocess.run([str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(server.port), "--event-loops", "2"],
                            capture_output=True, text=True, timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")})
    assert second.returncode != 0 and "Address already in use" in second.stderr, second.stderr
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"
