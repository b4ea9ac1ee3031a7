"""JWT auth, authorization after connect, origins, throttling, limits, TLS and hostile input, with real clients."""
import datetime
import json
import signal
import socket
import ssl
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import assert_quiet, eventually, recv_json, run_bench, send_json

SECRET = "a-shared-secret-of-at-least-32-bytes!"


def token(claims=None, key=SECRET, algorithm="HS256", headers=None, **extra):
    now = int(time.time())
    payload = {"sub": "alice", "exp": now + 300, "iat": now, **(claims or {}), **extra}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm, headers=headers)


@pytest.fixture
def secured(start_server):
    return start_server("--auth-hmac-secret", SECRET, "--auth-audience", "chat", "--auth-issuer", "https://issuer.example")


def good(**claims):
    return token({"aud": "chat", "iss": "https://issuer.example", **claims})


def refused(url, **kwargs):
    with pytest.raises(InvalidStatus) as error:
        connect(url, **kwargs)
    return error.value.response.status_code, error.value.response.body.decode()


def test_valid_token_in_query_header_or_subprotocol(secured):
    with connect(f"{secured.url}/ws?token={good()}") as ws:
        send_json(ws, action="joinRoom", roomId="lobby")
        assert recv_json(ws)["members"] == ["alice"]  # the user id comes from sub
    with connect(f"{secured.url}/ws", additional_headers={"Authorization": f"Bearer {good(sub='bob')}"}) as ws:
        assert_quiet(ws)
    with connect(f"{secured.url}/ws", subprotocols=["bearer", good(sub="carol")]) as ws:
        assert ws.subprotocol == "bearer"
        assert_quiet(ws)


@pytest.mark.parametrize("bad, reason", [
    (lambda: None, "no token"),
    (lambda: token({"aud": "chat", "iss": "https://issuer.example", "exp": int(time.time()) - 120}), "token expired"),
    (lambda: token({"aud": "other", "iss": "https://issuer.example"}), "wrong audience"),
    (lambda: token({"aud": "chat", "iss": "https://evil.example"}), "wrong issuer"),
    (lambda: token({"aud": "chat", "iss": "https://issuer.example"}, key="another-secret-that-is-32-bytes-long"), "bad signature"),
    (lambda: token({"aud": "chat", "iss": "https://issuer.example", "nbf": int(time.time()) + 600}), "token not yet valid"),
    (lambda: "not.a.token", "malformed token"),
], ids=["missing", "expired", "wrong-audience", "wrong-issuer", "bad-signature", "not-yet-valid", "malformed"])
def test_bad_tokens_are_refused_with_401_and_a_reason(secured, bad, reason):
    value = bad()
    status, body = refused(f"{secured.url}/ws" + (f"?token={value}" if value else ""))
    assert status == 401 and reason in json.loads(body)["message"]
    assert secured.http("/health/websocket")[1]["connections"] == 0
    assert any(e["msg"] == "connection refused" and reason in e["reason"] for e in secured.log_events())


def test_leeway_accepts_a_slightly_expired_token(start_server):
    server = start_server("--auth-hmac-secret", SECRET, "--auth-leeway", "60s")
    with connect(f"{server.url}/ws?token={token(exp=int(time.time()) - 30)}") as ws:
        assert_quiet(ws)


def test_short_hmac_secret_is_refused_at_start(start_server):
    with pytest.raises(RuntimeError) as failed:
        start_server("--auth-hmac-secret", "too-short")
    assert "auth.hmac_secret" in str(failed.value) and "32 bytes" in str(failed.value)


def write_pem(path: Path, public_key):
    path.write_bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


@pytest.mark.parametrize("kind", ["RS256", "ES256", "EdDSA"])
def test_public_key_algorithms_from_pem(start_server, tmp_path, kind):
    private = {"RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
               "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
               "EdDSA": ed25519.Ed25519PrivateKey.generate}[kind]()
    server = start_server("--auth-public-key-file", write_pem(tmp_path / "key.pem", private.public_key()))
    with connect(f"{server.url}/ws?token={token(key=private, algorithm=kind)}") as ws:
        assert_quiet(ws)
    other = ec.generate_private_key(ec.SECP256R1()) if kind == "ES256" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, _ = refused(f"{server.url}/ws?token={token(key=other, algorithm='ES256' if kind == 'ES256' else 'RS256')}")
    assert status == 401


def test_jwks_file_with_key_ids(start_server, tmp_path):
    keys = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2")}
    jwks = {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256", "use": "sig"}
                     for kid, key in keys.items()]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    server = start_server("--auth-jwks", str(tmp_path / "jwks.json"))
    for kid, key in keys.items():
        with connect(f"{server.url}/ws?token={token(key=key, algorithm='RS256', headers={'kid': kid})}") as ws:
            assert_quiet(ws)
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(f"{server.url}/ws?token={token(key=unknown, algorithm='RS256', headers={'kid': 'k3'})}")[0] == 401


def test_claims_limit_rooms_and_reach_integrations_as_authorizer(secured):
    with connect(f"{secured.url}/ws?token={good(rooms=['team-a:*', 'lobby'], plan='pro')}") as ws:
        send_json(ws, action="joinRoom", roomId="team-a:general")
        assert recv_json(ws)["action"] == "joinedRoom"
        send_json(ws, action="joinRoom", roomId="team-b:general")
        assert recv_json(ws)["message"] == "Forbidden: the token does not allow room team-b:general"
        send_json(ws, action="sendMessage", roomId="team-a:general", message="ok")
        assert recv_json(ws)["action"] == "message"


def test_route_claims_and_refresh_and_expiry(start_server):
    server = start_server("--auth-hmac-secret", SECRET, "--routes", "ping=ping,moderate=echo,$default=unknownAction",
                          "--auth-route-claims", "moderate=role:admin", "--heartbeat-ping-interval", "200ms",
                          "--heartbeat-pong-timeout", "5s")
    with connect(f"{server.url}/ws?token={token(role='user', exp=int(time.time()) + 2)}") as ws:
        send_json(ws, action="moderate")
        assert recv_json(ws)["message"] == "Forbidden: route moderate needs claim role:admin"
        send_json(ws, action="refreshToken", token=token(sub="mallory"))
        assert "another user" in recv_json(ws)["message"]
        send_json(ws, action="refreshToken", token=token(role="admin", exp=int(time.time()) + 600))
        refreshed = recv_json(ws)
        assert refreshed["action"] == "tokenRefreshed" and refreshed["expiresAt"] > time.time() * 1000
        send_json(ws, action="moderate")
        assert json.loads(ws.recv(timeout=5)) == {"action": "moderate"}
        time.sleep(2.5)
        assert_quiet(ws)  # the refreshed token outlived the first one
    with connect(f"{server.url}/ws?token={token(exp=int(time.time()) + 1)}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "token expired")


def test_origin_allowlist(start_server):
    server = start_server("--origins-allowed", "https://app.example.com,https://*.example.org")
    for origin in ("https://app.example.com", "https://eu.example.org"):
        with connect(f"{server.url}/ws", origin=origin) as ws:
            assert_quiet(ws)
    for origin in ("https://evil.example.com", "https://example.org", "http://app.example.com"):
        status, body = refused(f"{server.url}/ws", origin=origin)
        assert status == 403 and "not allowed" in body
    with connect(f"{server.url}/ws") as ws:  # no Origin: not a browser
        assert_quiet(ws)


def test_connect_throttle_and_connection_limits(start_server):
    server = start_server("--throttle-connect-rate", "1", "--throttle-connect-burst", "3")
    opened = [connect(f"{server.url}/ws") for _ in range(3)]
    assert refused(f"{server.url}/ws")[0] == 429
    for ws in opened:
        ws.close()
    limited = start_server("--limits-max-connections", "2", "--limits-max-connections-per-user", "1")
    with connect(f"{limited.url}/ws?userId=u1"):
        assert refused(f"{limited.url}/ws?userId=u1")[0] == 429
        with connect(f"{limited.url}/ws?userId=u2"):
            status, body = refused(f"{limited.url}/ws?userId=u3")
            assert status == 429 and "at most 2" in body
    limited.disconnects(at_least=2)
    with connect(f"{limited.url}/ws?userId=u1") as ws:  # released on disconnect
        assert_quiet(ws)


def test_message_throttling_and_abuse_close_while_others_stay_fast(start_server):
    server = start_server("--throttle-per-connection-rate", "20", "--throttle-per-connection-burst", "20",
                          "--throttle-abuse-close-after", "100")
    with connect(f"{server.url}/ws?userId=flooder", max_queue=None) as flooder, connect(f"{server.url}/ws?userId=calm") as calm:
        for _ in range(300):
            send_json(flooder, action="ping")
        latencies = []
        for _ in range(20):
            started = time.perf_counter()
            send_json(calm, action="ping")
            assert recv_json(calm)["action"] == "pong"
            latencies.append(time.perf_counter() - started)
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(json.loads(flooder.recv(timeout=5)))
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "rate limit exceeded"
        throttled = [f for f in frames if f.get("message") == "Too Many Requests"]
        assert len(throttled) >= 50 and set(throttled[0]) == {"message", "connectionId", "requestId"}
        assert sorted(latencies)[len(latencies) // 2] < 0.05  # the calm connection's median stays normal


def test_max_rooms_per_connection(start_server):
    server = start_server("--limits-max-rooms-per-connection", "2")
    with connect(f"{server.url}/ws") as ws:
        for room in ("a", "b"):
            send_json(ws, action="joinRoom", roomId=room)
            recv_json(ws)
        send_json(ws, action="joinRoom", roomId="c")
        assert recv_json(ws)["message"] == "Too many rooms (at most 2)"


def self_signed(tmp_path, name="localhost"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return certificate


def test_wss_with_reload_on_sighup(start_server, tmp_path):
    first = self_signed(tmp_path)
    server = start_server("--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", str(tmp_path / "key.pem"))

    def served_certificate():
        context = ssl.create_default_context(cadata=open(tmp_path / "cert.pem").read())
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.port)) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    context = ssl.create_default_context(cadata=(tmp_path / "cert.pem").read_text())
    with connect(f"wss://localhost:{server.port}/ws", ssl=context) as ws:
        assert_quiet(ws)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port)) as raw:
        old.wrap_socket(raw, server_hostname="localhost")
    assert served_certificate().serial_number == first.serial_number
    second = self_signed(tmp_path)
    server.signal(signal.SIGHUP)
    eventually(lambda: served_certificate().serial_number == second.serial_number, timeout=5, interval=0.1,
               message="new certificate served")


def test_slowloris_and_oversize_headers(start_server):
    server = start_server("--limits-handshake-timeout", "500ms")
    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never finishes
    slow.settimeout(3)
    assert slow.recv(100) == b""  # closed by the server
    slow.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as big:
        big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        response = big.recv(100)
    assert response.startswith(b"HTTP/1.1 4") or response == b""
    assert server.http("/health")[0] == 200


def test_thousands_of_joins_from_one_client_do_not_stall_the_node(server):
    with connect(f"{server.url}/ws?userId=joiner", max_queue=None) as joiner, connect(f"{server.url}/ws") as other:
        for n in range(2000):
            send_json(joiner, action="joinRoom", roomId=f"r{n % 50}")
        started = time.perf_counter()
        send_json(other, action="ping")
        assert recv_json(other)["action"] == "pong"
        assert time.perf_counter() - started < 1
        for _ in range(2000):
            frame = recv_json(joiner, timeout=20)
            assert frame["action"] in ("joinedRoom", "error")


def test_jwks_url_is_fetched_again_for_an_unknown_key_id(start_server):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    keys = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    fetches = []

    class JWKS(BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(time.monotonic())
            body = json.dumps({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256"}
                                        for kid, key in keys.items()]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    jwks = ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    try:
        server = start_server("--auth-jwks", f"http://127.0.0.1:{jwks.server_address[1]}/.well-known/jwks.json")
        with connect(f"{server.url}/ws?token={token(key=keys['k1'], algorithm='RS256', headers={'kid': 'k1'})}") as ws:
            assert_quiet(ws)
        assert len(fetches) == 1  # cached
        keys["k2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # rotated in
        with connect(f"{server.url}/ws?token={token(key=keys['k2'], algorithm='RS256', headers={'kid': 'k2'})}") as ws:
            assert_quiet(ws)
        assert len(fetches) == 2
    finally:
        jwks.shutdown()
        jwks.server_close()


def test_token_claims_reach_integrations_as_the_authorizer(start_server):
    from backend import Backend

    backend = Backend()
    try:
        server = start_server("--auth-hmac-secret", SECRET, "--integrations", f"$connect={backend.url},notify={backend.url}")
        with connect(f"{server.url}/ws?token={token(sub='dora', plan='pro', rooms=['a', 'b'])}") as ws:
            assert backend.next("$connect")["requestContext"]["authorizer"]["sub"] == "dora"
            send_json(ws, action="notify")
            authorizer = backend.next("notify")["requestContext"]["authorizer"]
            assert (authorizer["sub"], authorizer["plan"], authorizer["rooms"]) == ("dora", "pro", "a,b")
    finally:
        backend.stop()


def test_concurrent_handshakes_cannot_overshoot_the_connection_limit(start_server):
    server = start_server("--limits-max-connections", "5")
    for _ in range(2):  # the second round finds the first round's slots given back
        result = run_bench("connections", "--url", f"{server.url}/ws", "--count", "40", "--rate", "10000", "--hold", "0.2")
        assert (result["connections"], result["failed"]) == (5, 35), result
        assert "429" in result["first_failure"]
        # The generator exited: all 5 are gone.
        eventually(lambda: server.http("/health/websocket")[1]["connections"] == 0, timeout=5, message="connections gone")
