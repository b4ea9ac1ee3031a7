"""Hostile HTTP: what an anonymous caller (or a web page in a local browser) can make the HTTP side do.

After every case the node must still serve an ordinary WebSocket client."""
import base64
import json
import os
import socket
import time
import urllib.request

import jwt
import pytest
from websockets.sync.client import connect

from helpers import recv_json, send_json

TOKEN = "hostile-test-token-0123456789"
KEY_ID, SECRET = "AKIDHOSTILE", "hostile-secret"
JWT_SECRET = "a-shared-secret-of-at-least-32-bytes!"
MIB = 1 << 20


def exchange(port: int, request: bytes, timeout: float = 5) -> tuple[int, bytes]:
    """Sends raw bytes; the response's status and body, read until the server closes or the body is complete."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def request(method: str, path: str, headers: dict | None = None, version: str = "1.1", host: str | None = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}"] + ([f"Host: {host}"] if host else [])
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade(path: str = "/ws", method: str = "GET", version: str = "1.1", host: str | None = "127.0.0.1", **overrides) -> bytes:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
               "Sec-WebSocket-Version": "13"}
    headers.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return request(method, path, {name: value for name, value in headers.items() if value is not None}, version, host)


def message(body: bytes) -> str:
    return json.loads(body)["message"]


def assert_serves_websocket(server):
    with connect(f"{server.url}/ws?userId=after") as ws:
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


# 1. Loopback-only management refuses what a browser sends for another site.

@pytest.mark.parametrize(
    "headers, host, why",
    [
        ({"Origin": "http://evil.example"}, "127.0.0.1", "Origin"),
        ({"Origin": "null"}, "127.0.0.1", "Origin"),
        ({"Origin": "http://127.0.0.1:1"}, "127.0.0.1", "Origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "127.0.0.1", "Sec-Fetch-Site"),
        ({"Sec-Fetch-Site": "same-site"}, "127.0.0.1", "Sec-Fetch-Site"),
        ({}, "evil.example", "Host"),
        ({}, "evil.example:8080", "Host"),
        ({}, "127.0.0.1:99999999999999999999999", "Host"),
        ({}, None, "Host"),
    ],
    ids=["other-origin", "null-origin", "other-loopback-port", "cross-site", "same-site", "rebound-host", "rebound-host-port",
         "huge-port", "no-host"],
)
def test_loopback_management_refuses_other_sites(server, headers, host, why):
    with connect(f"{server.url}/ws?userId=victim") as ws:
        post = request("POST", "/@broadcast", {**headers, "Content-Length": "5"}, host=host) + b"owned"
        status, body = exchange(server.port, post)
        assert status == 403 and why in message(body), body
        for path in ("/@connections", "/dashboard", "/metrics"):
            status, body = exchange(server.port, request("GET", path, headers, host=host))
            assert status == 403 and why in message(body), (path, body)
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"  # the broadcast never arrived
    assert_serves_websocket(server)


def test_loopback_management_accepts_its_own_origin(server):
    own = {"Origin": f"http://localhost:{server.port}", "Sec-Fetch-Site": "same-origin", "Content-Length": "2"}
    for host in (f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}"):
        status, body = exchange(server.port, request("POST", "/@broadcast", own, host=host) + b"hi")
        assert status == 200 and json.loads(body) == {"delivered": 0}, body
    assert exchange(server.port, request("GET", "/@connections", {"Sec-Fetch-Site": "none"}))[0] == 200


def test_credentials_are_not_subject_to_the_loopback_browser_checks(start_server):
    server = start_server("--management-bearer-token", TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
    assert exchange(server.port, request("GET", "/@connections", headers, host="gateway.example"))[0] == 200


# 2. /metrics is part of the management API.

def test_metrics_move_to_the_management_port_with_its_token(start_server):
    from conftest import free_port

    management_port = free_port()
    server = start_server("--management-port", str(management_port), "--management-bearer-token", TOKEN)
    time.sleep(0.3)
    assert exchange(server.port, request("GET", "/metrics"))[0] == 404
    assert exchange(server.port, request("GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"}))[0] == 404
    assert exchange(management_port, request("GET", "/metrics"))[0] == 403
    assert exchange(management_port, request("GET", "/metrics", {"Authorization": "Bearer wrong"}))[0] == 403
    status, body = exchange(management_port, request("GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"}))
    assert status == 200 and b"switchboard_connections_active" in body
    assert_serves_websocket(server)


def test_metrics_on_a_shared_port_need_the_management_credentials(start_server):
    server = start_server("--management-bearer-token", TOKEN)
    assert exchange(server.port, request("GET", "/metrics"))[0] == 403
    status, body = exchange(server.port, request("GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"}))
    assert status == 200 and b"switchboard_connections_active" in body


# 3. Bodies: refused at the head unless a management route takes one; unauthenticated ones share a small budget.

@pytest.mark.parametrize(
    "head",
    [
        request("POST", "/health", {"Content-Length": str(MIB - 1)}),
        request("GET", "/health", {"Content-Length": "10"}),
        request("POST", "/nowhere", {"Transfer-Encoding": "chunked"}),
        request("POST", "/prod", {"Content-Length": "100"}),
        request("GET", "/@connections", {"Content-Length": "100"}),
        request("POST", "/@broadcast", {"Content-Length": str(MIB + 1)}),
        request("POST", "/@broadcast", {"Content-Length": "99999999999999999999999999"}),
        upgrade(Content_Length="100"),
    ],
    ids=["health-post", "health-get", "chunked-404", "stage", "get-management", "over-limit", "overflowing-length",
         "upgrade-with-body"],
)
def test_unwanted_bodies_are_refused_at_the_head(server, head):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)  # no body follows: the answer must not wait for it
        status, _ = read_response(sock)
        assert status in (400, 413), status
        assert sock.recv(1) == b""  # and the connection is closed
    assert_serves_websocket(server)


def test_a_chunked_management_body_over_the_limit_is_cut_off(start_server):
    server = start_server("--limits-max-message-bytes", "16KiB", "--limits-outbound-queue-bytes", "64KiB")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request("POST", "/@broadcast", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (4096, b"x" * 4096)
        try:
            for _ in range(8):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_response(sock)[0] == 413
    assert_serves_websocket(server)


def hold_bodies(port: int, head: bytes, count: int) -> tuple[list[socket.socket], list[int]]:
    """`count` sockets, each sending `head` and all but one byte of a 1 MiB - 1 body, then holding; the statuses of
    those answered at once."""
    sockets, statuses = [], []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
        try:
            sock.sendall(head + b"x" * (MIB - 2))
        except (BrokenPipeError, ConnectionResetError):
            pass
    time.sleep(0.5)
    for sock in sockets:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
            if data:
                statuses.append(int(data.split(b" ")[1]))
        except (BlockingIOError, ConnectionResetError):
            pass
    return sockets, statuses


@pytest.mark.parametrize(
    "path, headers, refused",
    [
        ("/health", {}, {413}),
        ("/@broadcast", {}, {403}),
        ("/@broadcast", {"Authorization": "Bearer wrong"}, {403}),
        ("/@broadcast", {"Authorization": f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20260101/eu-central-1/execute-api/aws4_request, "
                                          "SignedHeaders=host, Signature=00"}, {503}),
    ],
    ids=["health", "management-anonymous", "management-wrong-token", "management-unverified-sigv4"],
)
def test_many_sockets_holding_bodies_do_not_pin_memory(start_server, path, headers, refused):
    server = start_server("--management-access-keys", f"{KEY_ID}={SECRET}", "--management-bearer-token", TOKEN)
    assert_serves_websocket(server)
    before = rss_kib(server.process.pid)
    head = request("POST", path, {**headers, "Content-Length": str(MIB - 1)})
    sockets, statuses = hold_bodies(server.port, head, 100)
    try:
        grown = (rss_kib(server.process.pid) - before) / 1024
        assert grown < 40, f"RSS grew by {grown:.0f} MiB"
        # Every socket but the few whose bodies fit the node's budget was answered without its body being kept.
        assert len(statuses) >= 80 and set(statuses) == refused, statuses
        assert_serves_websocket(server)
    finally:
        for sock in sockets:
            sock.close()
    assert_serves_websocket(server)


# 4. Strict handshakes, one reading of the path.

@pytest.mark.parametrize(
    "raw, why",
    [
        (upgrade(version="1.0"), "HTTP/1.1"),
        (upgrade(method="POST"), "GET"),
        (upgrade(host=None), "Host"),
        (upgrade(Connection="keep-alive"), "Connection"),
        (upgrade(Sec_WebSocket_Key="not-base64!"), "Sec-WebSocket-Key"),
        (upgrade(Sec_WebSocket_Key=base64.b64encode(b"x" * 15).decode()), "Sec-WebSocket-Key"),
        (upgrade(Sec_WebSocket_Key=base64.b64encode(b"x" * 17).decode()), "Sec-WebSocket-Key"),
    ],
    ids=["http-1.0", "post", "no-host", "no-connection-upgrade", "key-not-base64", "key-15-bytes", "key-17-bytes"],
)
def test_lenient_handshakes_are_refused(server, raw, why):
    status, body = exchange(server.port, raw)
    assert status == 400 and why in message(body), body
    assert_serves_websocket(server)


def test_connection_tokens_are_a_case_insensitive_list(server):
    assert exchange(server.port, upgrade(Connection="keep-alive, UPGRADE"))[0] == 101


def test_an_encoded_at_is_the_same_path_for_management_and_websockets(start_server):
    server = start_server("--management-bearer-token", TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert exchange(server.port, request("GET", "/%40stats", auth))[0] == 200
    assert exchange(server.port, request("GET", "/prod/%40stats", auth))[0] == 200
    assert exchange(server.port, request("GET", "/%40stats"))[0] == 403
    for path in ("/%40broadcast", "/prod/%40connections", "/%40stats?x=1"):
        assert exchange(server.port, upgrade(path))[0] == 404, path
    assert exchange(server.port, upgrade("/prod%2F%40broadcast"))[0] == 400
    assert exchange(server.port, request("GET", "/prod%2F%40stats", auth))[0] == 400
    assert_serves_websocket(server)


# 5. One token, wherever it comes from.

def test_tokens_in_several_places_must_agree(start_server):
    server = start_server("--auth-hmac-secret", JWT_SECRET)
    alice = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    mallory = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    refused = "Token given in more than one place with different values"
    status, body = exchange(server.port, upgrade(f"/ws?token={alice}", Authorization=f"Bearer {mallory}"))
    assert status == 400 and message(body) == refused
    status, body = exchange(server.port, upgrade(f"/ws?token={alice}", Sec_WebSocket_Protocol=f"bearer, {mallory}"))
    assert status == 400 and message(body) == refused
    status, body = exchange(server.port, upgrade(f"/ws?token={alice}&token={mallory}"))
    assert status == 400 and message(body) == refused
    assert exchange(server.port, upgrade(f"/ws?token={alice}", Authorization=f"Bearer {alice}"))[0] == 101
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(upgrade(f"/ws?token={alice}", Sec_WebSocket_Protocol=f"bearer, {alice}"))
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-protocol: bearer" in head.lower()
    with connect(f"{server.url}/ws", additional_headers={"Authorization": f"Bearer {alice}"}) as ws:
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"


def test_dashboard_tokens_in_two_places_must_agree(start_server):
    server = start_server("--management-bearer-token", TOKEN)
    status, body = exchange(server.port, request("GET", f"/dashboard?token={TOKEN}", {"Authorization": "Bearer other"}))
    assert status == 400 and "more than one place" in message(body)
    assert exchange(server.port, request("GET", f"/dashboard?token={TOKEN}", {"Authorization": f"Bearer {TOKEN}"}))[0] == 200


# 6. Numbers from the client.

@pytest.mark.parametrize(
    "raw",
    [
        request("GET", "/@connections?limit=99999999999999999999999"),
        request("GET", "/@connections?limit=-1"),
        request("DELETE", "/@connections/AAAAAAAAAAAAAAA=?code=99999999999999999999"),
        request("POST", "/@broadcast", {"Content-Length": "-1"}),
        request("POST", "/@broadcast", {"Content-Length": "+5"}),
        request("POST", "/@broadcast", {"Content-Length": "5", "content-length": "6"}),
    ],
    ids=["huge-limit", "negative-limit", "huge-close-code", "negative-length", "signed-length", "two-lengths"],
)
def test_numbers_from_the_client_are_checked(server, raw):
    assert exchange(server.port, raw)[0] == 400
    assert_serves_websocket(server)


def test_urllib_management_call_still_works(server):
    # The ordinary way a local script calls the open API (urllib sends Host: 127.0.0.1:PORT and no Origin).
    data = json.dumps({"hello": 1}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.port}/@broadcast", data=data), timeout=5) as r:
        assert r.status == 200
