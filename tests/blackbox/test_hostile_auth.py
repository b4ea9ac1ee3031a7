"""Hostile tokens and management requests: huge and non-numeric JWT claims, comma-smuggled roles, SigV4 replays with
another body, and botocore-signed queries with escapes SigV4 must canonicalise from their bytes."""
import hashlib
import json
import time
import urllib.error
import urllib.request

import jwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import assert_quiet, recv_json, send_json

SECRET = "a-shared-secret-of-at-least-32-bytes!"
KEY_ID, ACCESS_SECRET = "AKIDSWITCHBOARD", "s3cr3t/key+value"


def token(**claims):
    now = int(time.time())
    return jwt.encode({"sub": "alice", "exp": now + 300, "iat": now, **claims}, SECRET, algorithm="HS256")


def connect_or_401(url):
    """The server's answer to a token: 101 (then closed) or 401 with its reason."""
    try:
        with connect(url):
            return 101, ""
    except InvalidStatus as error:
        return error.response.status_code, json.loads(error.response.body)["message"]


@pytest.fixture
def secured(start_server):
    return start_server("--auth-hmac-secret", SECRET, "--routes", "ping=ping,moderate=echo", "--auth-route-claims",
                        "moderate=role:admin")


@pytest.mark.parametrize("claims, expected", [
    ({"n": 1e19}, (101, "")),
    ({"n": -1e19, "m": 2 ** 64}, (101, "")),
    ({"exp": 1e16}, (401, "exp is out of range")),
    ({"exp": 1e300}, (401, "exp is out of range")),
    ({"nbf": -1e19}, (401, "nbf is out of range")),
    ({"iat": 2 ** 64}, (401, "iat is out of range")),
    ({"exp": "1"}, (401, "exp must be a number")),
    ({"exp": None}, (401, "exp must be a number")),
    ({"nbf": {"at": 1}}, (401, "nbf must be a number")),
], ids=["n-1e19", "n-negative-and-2^64", "exp-1e16", "exp-1e300", "nbf-negative-huge", "iat-2^64", "exp-string",
        "exp-null", "nbf-object"])
def test_hostile_numeric_claims_connect_or_401_and_the_server_stays_up(secured, claims, expected):
    status, message = connect_or_401(f"{secured.url}/ws?token={token(**claims)}")
    assert (status, message.split(" (")[0].removeprefix("Unauthorized: ")) == expected, message
    assert secured.process.poll() is None
    with connect(f"{secured.url}/ws?token={token()}") as ws:
        assert_quiet(ws)


def test_hostile_claims_in_refresh_token_are_refused_without_trapping(secured):
    with connect(f"{secured.url}/ws?token={token()}") as ws:
        for claims in ({"exp": 1e16}, {"exp": "1"}, {"n": 1e19, "exp": 1e19}):
            send_json(ws, action="refreshToken", token=token(**claims))
            reply = recv_json(ws)
            assert reply.get("action") != "tokenRefreshed" and "exp" in reply["message"], reply
        send_json(ws, action="refreshToken", token=token(n=1e19))
        assert recv_json(ws)["action"] == "tokenRefreshed"
    assert secured.process.poll() is None


def test_a_comma_in_a_string_claim_does_not_grant_a_role(secured):
    with connect(f"{secured.url}/ws?token={token(role='user,admin')}") as ws:
        send_json(ws, action="moderate")
        assert recv_json(ws)["message"] == "Forbidden: route moderate needs claim role:admin"
    with connect(f"{secured.url}/ws?token={token(role=['user', 'admin'])}") as ws:
        send_json(ws, action="moderate")
        assert json.loads(ws.recv(timeout=5)) == {"action": "moderate"}
    with connect(f"{secured.url}/ws?token={token(role='admin')}") as ws:
        send_json(ws, action="moderate")
        assert json.loads(ws.recv(timeout=5)) == {"action": "moderate"}


# SigV4


@pytest.fixture
def managed(start_server):
    return start_server("--management-access-keys", f"{KEY_ID}={ACCESS_SECRET}")


def signed(server, method, path, body=None, params=None, headers=None):
    """A request botocore signed for execute-api, as (url, headers, body) ready to send."""
    request = AWSRequest(method=method, url=f"http://127.0.0.1:{server.port}{path}", data=body, params=params,
                         headers=headers or {})
    SigV4Auth(Credentials(KEY_ID, ACCESS_SECRET), "execute-api", "eu-central-1").add_auth(request)
    prepared = request.prepare()
    return prepared.url, dict(prepared.headers), prepared.body


def send(method, url, headers, body):
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def connection_id(server, ws):
    url, headers, body = signed(server, "GET", "/@connections?limit=1000")
    status, page = send("GET", url, headers, body)
    assert status == 200, page
    [item] = json.loads(page)["items"]
    return item["connectionId"]


def test_a_signed_post_replayed_with_another_body_is_refused_and_nothing_is_delivered(managed):
    with connect(f"{managed.url}/ws?userId=alice") as ws:
        cid = connection_id(managed, ws).replace("=", "%3D")
        original = b'{"pay":1}'
        url, headers, _ = signed(managed, "POST", f"/prod/@connections/{cid}", body=original,
                                 headers={"X-Amz-Content-SHA256": hashlib.sha256(original).hexdigest()})
        assert send("POST", url, headers, original)[0] == 200
        assert ws.recv(timeout=5) == '{"pay":1}'
        status, body = send("POST", url, headers, b'{"pay":1000000}')
        assert status == 403 and "x-amz-content-sha256 does not match the body" in json.loads(body)["message"]
        without_hash = {k: v for k, v in headers.items() if k.lower() != "x-amz-content-sha256"}
        assert send("POST", url, without_hash, b'{"pay":1000000}')[0] == 403
        assert send("POST", url, {**headers, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, b'{"pay":2}')[0] == 403
        assert_quiet(ws)


@pytest.mark.parametrize("query", [
    "x=%0d%0a",
    "x=%FF",
    "x=a+b",
    "x=k=v",
    "x=a%20b&y=%e2%82%ac",
    "b=%0D%0A&a=%ff&c=1+1&d=x=y=z&e=%20&limit=5",
], ids=["crlf-lower", "ff", "plus", "equals", "space-and-lower-utf8", "all"])
def test_botocore_signed_raw_queries_are_accepted(managed, query):
    url, headers, body = signed(managed, "GET", f"/prod/@connections?{query}")
    status, page = send("GET", url, headers, body)
    assert status == 200, page


def test_botocore_signed_parameters_are_accepted(managed):
    # Parameters given to botocore go out form-encoded (a space as +) and sign strictly encoded (a space as %20).
    params = {"msg": "a b", "crlf": "\r\n", "eq": "k=v", "plus": "1+1", "euro": "€", "limit": "5"}
    url, headers, body = signed(managed, "GET", "/prod/@connections", params=params)
    status, page = send("GET", url, headers, body)
    assert status == 200, page
    tampered = url.replace("limit=5", "limit=6")
    assert send("GET", tampered, headers, body)[0] == 403
