"""The management API: boto3's apigatewaymanagementapi client unchanged, and the extension endpoints over HTTP."""
import contextlib
import datetime
import json
import socket
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import assert_quiet, recv_json, recv_until, send_json

KEY_ID, SECRET, TOKEN = "AKIDSWITCHBOARD", "s3cr3t/key+value", "test-token-0123456789"


@pytest.fixture
def managed(start_server):
    return start_server("--management-access-keys", f"{KEY_ID}={SECRET}", "--management-bearer-token", TOKEN)


def aws(server, stage="/prod", secret=SECRET, key_id=KEY_ID):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://127.0.0.1:{server.port}{stage}",
        region_name="eu-central-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def api(server, method, path, body=None, token=TOKEN, port=None):
    """A plain HTTP call with the bearer token; returns (status, headers, JSON or None)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port or server.port}{path}", data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, error.headers, error.read()
    return status, headers, json.loads(payload) if payload else None


def connect_user(server, user):
    ws = connect(f"{server.url}/prod?userId={user}")
    _, _, page = api(server, "GET", "/@connections?limit=1000")
    [item] = [item for item in page["items"] if item["userId"] == user]
    return ws, item["connectionId"]


@pytest.mark.parametrize("stage", ["/prod", ""])
def test_boto3_post_get_delete(managed, stage):
    ws, cid = connect_user(managed, "alice")
    with ws:
        client = aws(managed, stage)
        client.post_to_connection(ConnectionId=cid, Data=b'{"hello":"world"}')
        assert ws.recv(timeout=5) == '{"hello":"world"}'
        client.post_to_connection(ConnectionId=cid, Data=b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"

        described = client.get_connection(ConnectionId=cid)
        now = datetime.datetime.now(datetime.timezone.utc)
        assert abs((now - described["ConnectedAt"]).total_seconds()) < 30
        assert described["LastActiveAt"] >= described["ConnectedAt"]
        assert described["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": ws.request.headers["User-Agent"]}

        client.delete_connection(ConnectionId=cid)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1000
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId=cid)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=cid, Data=b"x")
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId=cid)


def test_get_connection_wire_json_is_api_gateways(managed):
    ws, cid = connect_user(managed, "wire")
    with ws:
        status, headers, body = api(managed, "GET", f"/prod/@connections/{cid.replace('=', '%3D')}")
        assert status == 200 and set(body) == {"connectedAt", "identity", "lastActiveAt"}
        assert set(body["identity"]) == {"sourceIp", "userAgent"}
        datetime.datetime.strptime(body["connectedAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert headers["x-amzn-RequestId"]


def test_boto3_errors_are_typed(managed):
    client = aws(managed)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"x")
    with pytest.raises(ClientError) as bad_id:
        client.get_connection(ConnectionId="not a valid id!")
    assert bad_id.value.response["Error"]["Code"] == "BadRequestException"
    assert bad_id.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    for wrong in (aws(managed, secret="wrong-secret"), aws(managed, key_id="AKIDUNKNOWN")):
        with pytest.raises(wrong.exceptions.ForbiddenException):
            wrong.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")


def test_payload_over_the_message_limit_is_413(start_server):
    server = start_server("--management-bearer-token", TOKEN, "--management-access-keys", f"{KEY_ID}={SECRET}",
                          "--limits-max-message-bytes", "1KiB")
    ws, cid = connect_user(server, "small")
    with ws:
        client = aws(server)
        with pytest.raises(client.exceptions.PayloadTooLargeException):
            client.post_to_connection(ConnectionId=cid, Data=b"x" * 2048)
        client.post_to_connection(ConnectionId=cid, Data=b"y" * 1024)
        assert ws.recv(timeout=5) == "y" * 1024


def test_large_posts_are_delivered_in_frames_no_larger_than_the_frame_limit(start_server, rawws_factory):
    server = start_server("--management-bearer-token", TOKEN, "--limits-max-frame-bytes", "1000")
    raw = rawws_factory(server.port, "/ws?userId=frames")
    _, _, page = api(server, "GET", "/@connections")
    cid = page["items"][0]["connectionId"]
    assert api(server, "POST", f"/@connections/{cid}", b"z" * 2500)[0] == 200
    frames = [raw.recv_frame() for _ in range(3)]
    assert [(op, len(data)) for op, data in frames] == [(1, 1000), (0, 1000), (0, 500)]


def test_full_client_buffer_answers_429_without_dropping_the_client(start_server, rawws_factory):
    server = start_server("--management-bearer-token", TOKEN, "--management-access-keys", f"{KEY_ID}={SECRET}",
                          "--limits-outbound-queue-bytes", "64KiB", "--limits-max-message-bytes", "16KiB")
    stalled = rawws_factory(server.port, "/ws?userId=stalled")
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    _, _, page = api(server, "GET", "/@connections")
    cid = page["items"][0]["connectionId"]
    client = aws(server)
    statuses = []
    for _ in range(2000):
        try:
            client.post_to_connection(ConnectionId=cid, Data=b"x" * 16000)
            statuses.append(200)
        except client.exceptions.LimitExceededException:
            statuses.append(429)
            break
    assert statuses[-1] == 429 and statuses.count(200) > 0
    assert client.get_connection(ConnectionId=cid)["Identity"]["SourceIp"] == "127.0.0.1"


def test_delete_with_code_and_reason_runs_disconnect(managed):
    with connect(f"{managed.url}/ws?userId=peer") as peer:
        send_json(peer, action="joinRoom", roomId="r")
        recv_json(peer)
        ws, cid = connect_user(managed, "kicked")
        with ws:
            send_json(ws, action="joinRoom", roomId="r")
            recv_json(ws)
            assert recv_json(peer)["action"] == "userJoined"
            assert api(managed, "DELETE", f"/@connections/{cid}?code=1001")[0] == 204
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
        event = recv_json(peer)
        assert (event["action"], event["userId"]) == ("userLeft", "kicked")
        assert_quiet(peer)
    ws, cid = connect_user(managed, "kicked2")
    with ws:
        assert api(managed, "DELETE", f"/@connections/{cid}?code=4000&reason=go%20away")[0] == 204
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "go away")
    for query in ("code=1006", "code=abc", "code=999", "reason=" + "x" * 124):
        status, headers, body = api(managed, "DELETE", f"/@connections/AAAAAAAAAAAAAAA=?{query}")
        assert status == 400 and headers["x-amzn-ErrorType"] == "BadRequestException" and body["message"]


def test_rooms_users_and_broadcast(managed):
    with connect(f"{managed.url}/ws?userId=ann") as ann, connect(f"{managed.url}/ws?userId=ann") as ann2, \
            connect(f"{managed.url}/ws?userId=ben") as ben:
        for ws in (ann, ben):
            send_json(ws, action="joinRoom", roomId="news")
            recv_until(ws, "joinedRoom")
        recv_until(ann, "userJoined")

        status, _, body = api(managed, "POST", "/@rooms/news", {"headline": "hi"})
        assert (status, body) == (200, {"delivered": 2})
        assert recv_json(ann) == {"headline": "hi"} and recv_json(ben) == {"headline": "hi"}

        status, _, body = api(managed, "POST", "/prod/@rooms/news?format=message&sender=newsroom", {"headline": "wrapped"})
        assert body == {"delivered": 2}
        frame = recv_json(ben)
        assert (frame["action"], frame["roomId"], frame["sender"], frame["message"]) == ("message", "news", "newsroom", {"headline": "wrapped"})
        recv_json(ann)

        assert api(managed, "POST", "/@users/ann", b"for ann")[2] == {"delivered": 2}
        assert ann.recv(timeout=5) == "for ann" and ann2.recv(timeout=5) == "for ann"
        assert api(managed, "POST", "/@broadcast", b"everyone")[2] == {"delivered": 3}
        for ws in (ann, ann2, ben):
            assert ws.recv(timeout=5) == "everyone"
        assert_quiet(ben)

        assert api(managed, "POST", "/@rooms/news?format=message", b"not json")[0] == 400
        assert api(managed, "POST", "/@users/ann?format=message", b"{}")[0] == 400
        assert api(managed, "POST", "/@rooms/bad%20room", b"x")[0] == 400
        assert api(managed, "POST", "/@rooms/empty", b"x")[2] == {"delivered": 0}


def test_server_side_join_and_leave(managed):
    with connect(f"{managed.url}/ws?userId=member") as member:
        send_json(member, action="joinRoom", roomId="ops")
        recv_json(member)
        ws, cid = connect_user(managed, "joined")
        with ws:
            assert api(managed, "PUT", f"/@connections/{cid}/rooms/ops")[0] == 204
            joined = recv_json(ws)
            assert joined["action"] == "joinedRoom" and sorted(joined["members"]) == ["joined", "member"]
            assert recv_json(member)["userId"] == "joined"
            send_json(ws, action="sendMessage", roomId="ops", message="hello")
            assert recv_until(member, "message")["message"] == "hello"
            _, _, body = api(managed, "GET", "/@connections?limit=1000")
            assert [item["rooms"] for item in body["items"] if item["userId"] == "joined"] == [["ops"]]
            assert api(managed, "DELETE", f"/@connections/{cid}/rooms/ops")[0] == 204
            event = recv_json(member)
            assert (event["action"], event["userId"]) == ("userLeft", "joined")
    assert api(managed, "PUT", "/@connections/AAAAAAAAAAAAAAA=/rooms/ops")[0] == 410


def test_listings_page_through_everything(managed):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{managed.url}/ws?userId=u{i}")) for i in range(5)]
        for index, ws in enumerate(clients):
            for room in ("all", f"solo{index}"):
                send_json(ws, action="joinRoom", roomId=room)
                recv_until(ws, "joinedRoom")
        seen, cursor = [], None
        while True:
            status, _, page = api(managed, "GET", "/@connections?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200 and len(page["items"]) <= 2
            seen += page["items"]
            cursor = page["next"]
            if cursor is None:
                break
        assert sorted(item["userId"] for item in seen) == [f"u{i}" for i in range(5)]
        assert all(item["rooms"][0] == "all" for item in seen)
        _, _, rooms = api(managed, "GET", "/@rooms?limit=1000")
        assert {item["roomId"]: item["members"] for item in rooms["items"]}["all"] == 5
        _, _, members = api(managed, "GET", "/@rooms/all/members?limit=3")
        assert len(members["items"]) == 3 and members["next"]
        _, _, stats = api(managed, "GET", "/@stats")
        assert stats["connections"] == 5 and stats["rooms"] == 6 and stats["draining"] is False
        assert api(managed, "GET", "/@connections?limit=0")[0] == 400


def test_authentication_is_required_once_configured(managed):
    status, headers, body = api(managed, "GET", "/@stats", token=None)
    assert (status, headers["x-amzn-ErrorType"], body["message"]) == (403, "ForbiddenException", "Missing Authentication Token")
    assert api(managed, "GET", "/@stats", token="wrong-token-0123456789")[0] == 403
    assert api(managed, "GET", "/@openapi.json", token=None)[0] == 200
    status, headers, body = api(managed, "GET", "/@nothing")
    assert (status, headers["x-amzn-ErrorType"]) == (404, "NotFoundException")


def test_without_credentials_only_loopback_is_served_and_the_log_says_so(server):
    assert api(server, "GET", "/@stats", token=None)[0] == 200
    assert any("answers loopback clients only" in e["msg"] and e["level"] == "warning" for e in server.log_events())


def test_management_on_a_separate_port(start_server):
    from conftest import free_port

    port = free_port()
    server = start_server("--management-port", str(port), "--management-bearer-token", TOKEN)
    with connect(f"{server.url}/ws"):
        assert api(server, "GET", "/@stats", port=port)[2]["connections"] == 1
        assert api(server, "GET", "/@stats")[0] == 404
        assert api(server, "GET", "/health", port=port)[0] == 200


def test_websocket_upgrades_are_refused_on_management_paths(managed):
    with pytest.raises(Exception):
        connect(f"{managed.url}/prod/@connections")


def test_operator_commands_send_and_connections(managed):
    import subprocess

    from conftest import BINARY

    def run(*args):
        return subprocess.run([str(BINARY), *args, "--url", f"http://127.0.0.1:{managed.port}", "--token", TOKEN],
                              capture_output=True, text=True, timeout=30)

    ws, cid = connect_user(managed, "operator")
    with ws:
        send_json(ws, action="joinRoom", roomId="ops")
        recv_json(ws)
        result = run("send", cid, "from the cli")
        assert result.returncode == 0, result.stderr
        assert ws.recv(timeout=5) == "from the cli"
        # Ids are URL-safe base64, so one may start with "-": it is an id, not an unknown option (exit 64).
        result = run("send", "-AAAAAAAAAAAAAA=", "x")
        assert result.returncode != 0 and "answered 410" in result.stderr, result.stderr
        result = run("send", "--room", "ops", '{"n":1}')
        assert result.returncode == 0 and "delivered to 1 connection" in result.stdout
        assert recv_json(ws) == {"n": 1}
        result = run("connections", "--json")
        assert result.returncode == 0
        [item] = [json.loads(line) for line in result.stdout.splitlines()]
        assert (item["connectionId"], item["userId"], item["rooms"]) == (cid, "operator", ["ops"])
        assert cid in run("connections").stdout
    result = run("send", "AAAAAAAAAAAAAAA=", "x")
    assert result.returncode != 0 and "410" in result.stderr and "gone" in result.stderr
