"""HTTP integrations: API Gateway's Lambda-proxy events to a real HTTP backend, and its replies."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from backend import Backend
from conftest import free_port
from helpers import recv_json, recv_until, send_json

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def backend():
    server = Backend()
    yield server
    server.stop()


def gateway(start_server, backend, *extra, routes=("$connect", "$disconnect", "$default")):
    integrations = ",".join(f"{route}={backend.url}" for route in routes)
    return start_server("--integrations", integrations, *extra)


def test_connect_event_is_api_gateways(start_server, backend):
    server = gateway(start_server, backend)
    with connect(f"{server.url}/prod?userId=alice&tag=a&tag=b", additional_headers={"X-Custom": "1"}) as ws:
        event = backend.next("$connect")
        context = event["requestContext"]
        assert context["routeKey"] == "$connect" and context["eventType"] == "CONNECT"
        assert context["messageDirection"] == "IN" and context["stage"] == "prod" and context["apiId"] == "switchboard"
        assert context["domainName"] == f"127.0.0.1:{server.port}"
        assert isinstance(context["connectedAt"], int) and isinstance(context["requestTimeEpoch"], int)
        assert context["requestTimeEpoch"] >= context["connectedAt"] > 1.7e12
        time.strptime(context["requestTime"], "%d/%b/%Y:%H:%M:%S +0000")
        assert context["identity"] == {"userAgent": ws.request.headers["User-Agent"], "sourceIp": "127.0.0.1"}
        assert len(context["connectionId"]) == 16 and context["requestId"] == context["extendedRequestId"]
        assert "messageId" not in context and "disconnectStatusCode" not in context
        assert event["headers"]["X-Custom"] == "1" and event["multiValueHeaders"]["X-Custom"] == ["1"]
        assert event["headers"]["Sec-WebSocket-Version"] == "13"
        assert event["queryStringParameters"] == {"userId": "alice", "tag": "b"}
        assert event["multiValueQueryStringParameters"] == {"userId": ["alice"], "tag": ["a", "b"]}
        assert event["isBase64Encoded"] is False and "body" not in event
        assert event["_headers"]["Content-Type"] == "application/json"

        ws.send('{"action":"anything","n":1}')
        message = backend.next("$default")
        mc = message["requestContext"]
        assert mc["eventType"] == "MESSAGE" and mc["routeKey"] == "$default" and mc["messageId"]
        assert mc["connectionId"] == context["connectionId"] and mc["connectedAt"] == context["connectedAt"]
        assert message["body"] == '{"action":"anything","n":1}' and message["isBase64Encoded"] is False
        assert "headers" not in message and "queryStringParameters" not in message
        ws.send(b"\x00\x01\xff")
        binary = backend.next("$default")
        assert binary["isBase64Encoded"] is True and base64.b64decode(binary["body"]) == b"\x00\x01\xff"
    disconnect = backend.next("$disconnect")
    dc = disconnect["requestContext"]
    assert dc["eventType"] == "DISCONNECT" and dc["disconnectStatusCode"] == 1000 and dc["disconnectReason"] == ""
    assert disconnect["headers"]["Host"] == f"127.0.0.1:{server.port}" and "body" not in disconnect


def test_no_query_means_no_query_maps(start_server, backend):
    server = gateway(start_server, backend)
    with connect(f"{server.url}/ws"):
        event = backend.next("$connect")
        assert "queryStringParameters" not in event and "multiValueQueryStringParameters" not in event
        assert event["requestContext"]["stage"] == "$default"


@pytest.mark.parametrize("status", [401, 403])
def test_connect_refusal_rejects_the_upgrade_and_registers_nothing(start_server, backend, status):
    backend.replies["$connect"] = lambda event: (200, {"statusCode": status, "body": "Unauthorized"})
    server = gateway(start_server, backend)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}/prod?token=bad")
    assert refused.value.response.status_code == status and refused.value.response.body == b"Unauthorized"
    assert server.http("/health/websocket")[1]["connections"] == 0
    backend.next("$connect")
    with pytest.raises(Exception):
        backend.next("$disconnect", timeout=1)  # no registration, so no $disconnect


def test_connect_context_reaches_later_events_and_names_the_user(start_server, backend):
    backend.replies["$connect"] = lambda event: (200, {"statusCode": 200, "context": {"userId": "from-backend", "plan": "pro"}})
    server = gateway(start_server, backend, routes=("$connect", "notify"))
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, action="joinRoom", roomId="r")
        assert recv_json(ws)["members"] == ["from-backend"]
        send_json(ws, action="notify")
        assert backend.next("notify")["requestContext"]["authorizer"] == {"plan": "pro", "userId": "from-backend"}


def test_two_way_route_sends_the_reply_body_back(start_server, backend):
    backend.replies["echo"] = lambda event: (200, {"statusCode": 200, "body": "echo:" + event["body"]})
    backend.replies["bin"] = lambda event: (200, {"statusCode": 200, "body": base64.b64encode(b"\x01\x02").decode(), "isBase64Encoded": True})
    server = start_server("--integrations", f"echo={backend.url},bin={backend.url},quiet={backend.url}",
                          "--integration-route-responses", "echo,bin")
    with connect(f"{server.url}/ws") as ws:
        send_json(ws, action="echo")
        assert ws.recv(timeout=5) == 'echo:{"action": "echo"}'
        send_json(ws, action="bin")
        assert ws.recv(timeout=5) == b"\x01\x02"
        backend.replies["quiet"] = lambda event: (200, {"statusCode": 200, "body": "not sent"})
        send_json(ws, action="quiet")
        backend.next("quiet")
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"


def test_messages_of_one_connection_reach_the_backend_in_order(start_server, backend):
    delays = iter([0.05, 0.0] * 50)

    def slow_then_fast(event):
        time.sleep(next(delays))
        return 200, {"statusCode": 200}

    backend.replies["$default"] = slow_then_fast
    server = gateway(start_server, backend, routes=("$default",))
    with connect(f"{server.url}/ws") as ws:
        for index in range(30):
            ws.send(json.dumps({"seq": index}))
        bodies = [json.loads(backend.next("$default")["body"])["seq"] for _ in range(30)]
    assert bodies == list(range(30))


def test_a_slow_backend_call_does_not_stall_other_connections(start_server, backend):
    release = threading.Event()

    def reply(event):
        if json.loads(event["body"]).get("slow"):
            release.wait(10)
        return 200, {"statusCode": 200, "body": "done"}

    backend.replies["$default"] = reply
    server = start_server("--integrations", f"$default={backend.url}", "--integration-route-responses", "$default")
    with connect(f"{server.url}/ws") as slow, connect(f"{server.url}/ws") as fast:
        slow.send(json.dumps({"slow": True}))
        started = time.monotonic()
        for _ in range(5):
            fast.send(json.dumps({"slow": False}))
            assert fast.recv(timeout=5) == "done"
        assert time.monotonic() - started < 3
        release.set()
        assert slow.recv(timeout=5) == "done"


@pytest.mark.parametrize("failure", ["down", "timeout", "500", "handler-raised"])
def test_failing_backend_gives_api_gateways_error_frame(start_server, backend, failure):
    if failure == "down":
        url = f"http://127.0.0.1:{free_port()}/"
    else:
        url = backend.url
        backend.replies["$default"] = {
            "timeout": lambda e: (time.sleep(2), (200, {"statusCode": 200}))[1],
            "500": lambda e: (500, b"boom"),
            "handler-raised": lambda e: (200, {"errorMessage": "KeyError: 'x'", "errorType": "KeyError"}),
        }[failure]
    server = start_server("--integrations", f"$default={url}", "--integration-timeout", "500ms")
    with connect(f"{server.url}/ws") as ws:
        ws.send("hello")
        frame = recv_json(ws)
        assert frame["message"] == "Internal server error" and len(frame["connectionId"]) == 16 and frame["requestId"]
        assert set(frame) == {"message", "connectionId", "requestId"}
    status, metrics = server.http("/metrics")
    assert 'switchboard_integration_errors_total{route="$default"} 1' in metrics
    assert 'switchboard_integration_latency_seconds_count{route="$default"} 1' in metrics


def test_connect_backend_down_refuses_with_500(start_server):
    server = start_server("--integrations", f"$connect=http://127.0.0.1:{free_port()}/")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}/ws")
    assert refused.value.response.status_code == 500
    assert json.loads(refused.value.response.body) == {"message": "Internal server error"}


def test_huge_bodies_arrive_intact(start_server, backend):
    server = gateway(start_server, backend, "--limits-max-message-bytes", "4MiB", "--limits-max-frame-bytes", "4MiB",
                     "--limits-outbound-queue-bytes", "8MiB",
                     routes=("$default",))
    payload = "é" * 1_500_000
    with connect(f"{server.url}/ws", max_size=None) as ws:
        ws.send(payload)
        assert backend.next("$default")["body"] == payload
        blob = os.urandom(1 << 20)
        ws.send(blob)
        assert base64.b64decode(backend.next("$default")["body"]) == blob


def test_disconnect_is_delivered_whatever_ends_the_connection(start_server, backend, rawws_factory):
    server = gateway(start_server, backend, routes=("$connect", "$disconnect"))
    with connect(f"{server.url}/ws") as ws:
        ws.close(4001, "bye")
    event = backend.next("$disconnect")
    assert (event["requestContext"]["disconnectStatusCode"], event["requestContext"]["disconnectReason"]) == (4001, "bye")

    raw = rawws_factory(server.port)
    backend.next("$connect")
    raw.sock.close()  # the client dies without a close frame
    assert backend.next("$disconnect")["requestContext"]["disconnectStatusCode"] == 1006

    with connect(f"{server.url}/ws"):
        backend.next("$connect")
        server.signal(signal.SIGTERM)
        assert backend.next("$disconnect")["requestContext"]["disconnectStatusCode"] == 1001
        assert server.process.wait(timeout=10) == 0


def test_failed_disconnect_delivery_is_retried(start_server, backend):
    attempts = []

    def flaky(event):
        attempts.append(time.monotonic())
        return (500, b"down") if len(attempts) < 3 else (200, {"statusCode": 200})

    backend.replies["$disconnect"] = flaky
    server = gateway(start_server, backend, routes=("$disconnect",))
    with connect(f"{server.url}/ws"):
        pass
    for _ in range(3):
        backend.next("$disconnect", timeout=10)
    assert len(attempts) == 3 and attempts[2] - attempts[0] >= 0.7  # 250 ms, then 500 ms of backoff


def test_seed_loop_through_the_example_backend(start_server):
    backend_port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDLOCAL", "AWS_SECRET_ACCESS_KEY": "local-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    url = f"http://127.0.0.1:{backend_port}/2015-03-31/functions/function/invocations"
    server = start_server("--routes", "", "--management-access-keys", "AKIDLOCAL=local-secret",
                          "--integrations", f"$connect={url},$disconnect={url},$default={url}")
    env["WEBSOCKET_ENDPOINT"] = f"http://127.0.0.1:{server.port}/prod"
    process = subprocess.Popen([sys.executable, str(ROOT / "examples/lambda-backend/server.py"), str(backend_port)], env=env)
    try:
        for _ in range(100):
            try:
                import socket
                socket.create_connection(("127.0.0.1", backend_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{server.url}/prod?token=invalid")
        assert refused.value.response.status_code == 401
        with connect(f"{server.url}/prod?userId=alice") as alice, connect(f"{server.url}/prod?userId=bob") as bob:
            send_json(alice, action="joinRoom", roomId="lobby")
            assert recv_json(alice) == {"action": "joinedRoom", "roomId": "lobby", "members": ["alice"]}
            send_json(bob, action="joinRoom", roomId="lobby")
            assert recv_until(alice, "userJoined")["userId"] == "bob"
            assert sorted(recv_until(bob, "joinedRoom")["members"]) == ["alice", "bob"]
            send_json(bob, action="sendMessage", roomId="lobby", message="hi from bob")
            for ws in (alice, bob):
                frame = recv_until(ws, "message")
                assert (frame["message"], frame["sender"]) == ("hi from bob", "bob")
            send_json(alice, action="dance")
            assert recv_json(alice)["message"] == "Unknown action: dance"
        # bob's and alice's $disconnect reach the backend, which tells the room (nobody is left to hear it).
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def test_a_client_gone_during_a_slow_connect_gives_everything_back(start_server, backend):
    """The client closes its socket while `$connect` is still running: its slot under max_connections, its count
    and its registration must come back, or a node whose clients give up on a slow backend ends up full."""
    def slow_for_quitter(event):
        if event["queryStringParameters"].get("userId") == "quitter":
            time.sleep(1)
        return 200, {"statusCode": 200}

    backend.replies["$connect"] = slow_for_quitter
    server = gateway(start_server, backend, "--limits-max-connections", "1", routes=("$connect",))
    with socket.create_connection(("127.0.0.1", server.port)) as quitter:
        quitter.sendall(b"GET /ws?userId=quitter HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        backend.next("$connect")
    time.sleep(1.5)  # the backend answers after the client left
    assert server.http("/health/websocket")[1]["connections"] == 0
    with connect(f"{server.url}/ws?userId=next") as ws:  # the only slot is free again
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"
