"""SIGTERM: stop accepting, report 503, close every client with 1001, run every $disconnect, exit 0."""
import contextlib
import json
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import eventually


def test_sigterm_drains_and_exits_zero(start_server):
    server = start_server("--drain-delay", "1s", "--drain-grace-period", "10s")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{server.url}/ws?userId=u{i}")) for i in range(3)]
        drain_with(server, clients)


def drain_with(server, clients):
    for ws in clients:
        ws.send(json.dumps({"action": "joinRoom", "roomId": "r"}))
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    eventually(lambda: server.http("/health") == (503, {"status": "draining"}), timeout=1, interval=0.02,
               message="/health turning 503 before the drain delay ended")
    assert server.http("/health/websocket")[1]["status"] == "draining"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.url}/ws")
    assert refused.value.response.status_code == 503
    for ws in clients:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server draining")
    assert server.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert server.disconnects() == [(1001, "server draining")] * 3
    assert server.log_events()[-1]["msg"] == "stopped"


def test_sigterm_with_an_unresponsive_client_still_exits_within_the_grace_period(start_server, rawws_factory):
    server = start_server("--drain-grace-period", "3s")
    silent = rawws_factory(server.port)  # never answers the close frame
    server.signal(signal.SIGTERM)
    assert server.process.wait(timeout=10) == 0
    assert silent is not None
