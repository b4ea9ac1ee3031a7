"""What an attacker found in a cluster and on one node: traps reachable from input, colliding Redis keys, state that
outlives its use, and a node that waited on a Redis that was gone or frozen. Each test failed before its fix."""
import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest
from websockets.sync.client import connect

from helpers import Traffic, eventually, first_gap, recv_json, recv_until, rejoin, send_json
from conftest import TOKEN, api


def get(node, path, read=None):
    """GET with the management bearer token; the status and up to `read` bytes of the body."""
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read(read) if read else response.read()


def assert_alive(node):
    with connect(f"{node.url}/ws") as ws:
        send_json(ws, action="ping")
        assert recv_json(ws)["action"] == "pong"
    assert node.process.poll() is None, node.output()[-2000:]


def test_stats_metrics_and_dashboard_do_not_kill_a_cluster_node(cluster):
    """`rooms(limit: Int.max)` reached `limit + 1` in the Redis broker: one request per node took the cluster down."""
    node, _ = cluster(2)
    with connect(f"{node.url}/ws") as ws:
        send_json(ws, action="joinRoom", roomId="lobby")
        recv_until(ws, "joinedRoom")
        assert get(node, "/metrics")[0] == 200
        status, stats = api(node, "GET", "/@stats")
        assert status == 200 and stats["rooms"] == 1
        status, event = get(node, "/dashboard/events", read=200)
        assert status == 200 and event.startswith(b"data: ")
    assert_alive(node)


def test_a_huge_last_offset_does_not_kill_a_cluster_node(cluster):
    node, _ = cluster(2)
    with connect(f"{node.url}/ws") as ws:
        send_json(ws, action="joinRoom", roomId="x")
        recv_until(ws, "joinedRoom")
        send_json(ws, action="sendMessage", roomId="x", message="one")
        recv_until(ws, "message")
    with connect(f"{node.url}/ws") as ws:
        send_json(ws, action="joinRoom", roomId="x", lastOffset=9223372036854775807)
        assert recv_until(ws, "joinedRoom")["offset"] == 1
        lost = recv_until(ws, "historyLost")
        assert lost["lastOffset"] == 9223372036854775807
    assert_alive(node)


def test_room_ids_cannot_collide_with_another_rooms_keys(cluster, redis):
    """Joining `dm:a:b:offset` first used to share a key with room `dm:a:b`'s counter: its messages stopped
    crossing nodes and its history broke."""
    a, b = cluster(2)
    with connect(f"{a.url}/ws?userId=mallory") as mallory:
        send_json(mallory, action="joinRoom", roomId="dm:a:b:offset")
        recv_until(mallory, "joinedRoom")
        with connect(f"{a.url}/ws?userId=alice") as alice, connect(f"{b.url}/ws?userId=bob") as bob:
            for ws in (alice, bob):
                send_json(ws, action="joinRoom", roomId="dm:a:b")
                recv_until(ws, "joinedRoom")
            for n in range(1, 4):
                send_json(alice, action="sendMessage", roomId="dm:a:b", message=f"m{n}")
                got = recv_until(bob, "message")
                assert (got["message"], got["offset"]) == (f"m{n}", n)
        with connect(f"{b.url}/ws?userId=carol") as carol:
            send_json(carol, action="joinRoom", roomId="dm:a:b", lastOffset=1)
            recv_until(carol, "joinedRoom")
            assert [recv_until(carol, "message")["offset"] for _ in range(2)] == [2, 3]


def test_client_chosen_close_codes_do_not_become_metric_series(start_server):
    server = start_server()
    for code in range(4000, 4300):
        with connect(f"{server.url}/ws") as ws:
            ws.close(code=code)
    server.disconnects(at_least=300)
    _, text = server.http("/metrics")
    series = re.findall(r'^switchboard_disconnects_total\{code="([^"]+)"\} (\d+)', text, re.M)
    assert dict(series) == {"4xxx": "300"}


@pytest.mark.parametrize("mode", ["memory", "redis"])
def test_a_rejoin_that_missed_more_than_the_outbound_bound_is_paced_not_dropped(start_server, redis, mode):
    """History replay used to write everything at once and trip the slow-consumer bound (closed 1008)."""
    flags = ["--limits-outbound-queue-bytes", "64KiB", "--limits-max-message-bytes", "32KiB"]
    if mode == "redis":
        flags += ["--redis-url", redis.url, "--node-id", "n1"]
    server = start_server(*flags)
    body = "x" * 16_000
    with connect(f"{server.url}/ws?userId=writer", max_size=None) as writer:
        send_json(writer, action="joinRoom", roomId="big")
        recv_until(writer, "joinedRoom")
        for _ in range(60):  # 60 × 16 kB: fifteen times the bound
            send_json(writer, action="sendMessage", roomId="big", message=body)
            recv_until(writer, "message")
        with connect(f"{server.url}/ws?userId=reader", max_size=None) as reader:
            send_json(reader, action="joinRoom", roomId="big", lastOffset=0)
            assert recv_until(reader, "joinedRoom")["offset"] == 60
            send_json(writer, action="sendMessage", roomId="big", message="live")  # arrives after the replay
            send_json(reader, action="ping")  # answered after the replay, in order
            offsets = [recv_until(reader, "message")["offset"] for _ in range(61)]
            assert offsets == list(range(1, 62))
            assert recv_json(reader)["action"] == "pong"
        # A client gone in the middle of its replay ends it: no hang, no leak, one $disconnect.
        quitter = connect(f"{server.url}/ws?userId=quitter", max_size=None)
        send_json(quitter, action="joinRoom", roomId="big", lastOffset=0)
        recv_until(quitter, "joinedRoom")
        quitter.socket.shutdown(socket.SHUT_RDWR)
        quitter.close()
        eventually(lambda: len(server.disconnects()) == 2, message="the quitter's $disconnect")
        send_json(writer, action="sendMessage", roomId="big", message="still here")
        while recv_until(writer, "message")["message"] != "still here":
            pass
    assert all(code != 1008 for code, _ in server.disconnects())


def health(node):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/health", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_node_serves_its_clients_at_once_while_redis_is_gone_or_frozen(cluster, redis, fault):
    """Same-node room messages waited on the reconnect backoff (median 6.7 s) with Redis killed; with Redis frozen
    `/health` said ok, a handshake took 10 s and a sender's own message 5 s."""
    node, _ = cluster(2)
    alice = connect(f"{node.url}/ws?userId=alice")
    bob = connect(f"{node.url}/ws?userId=bob")
    try:
        for ws in (alice, bob):
            send_json(ws, action="joinRoom", roomId="local")
            recv_until(ws, "joinedRoom")
        if fault == "killed":
            redis.stop()
        else:
            os.kill(redis.process.pid, signal.SIGSTOP)
        eventually(lambda: health(node)["status"] == "degraded", timeout=5, message="health reports degraded")
        for n in range(5):
            started = time.monotonic()
            send_json(alice, action="sendMessage", roomId="local", message=n)
            assert recv_until(bob, "message", timeout=2)["message"] == n
            assert recv_until(alice, "message", timeout=2)["message"] == n
            assert time.monotonic() - started < 1
        started = time.monotonic()
        with connect(f"{node.url}/ws?userId=carol", open_timeout=3) as carol:
            send_json(carol, action="joinRoom", roomId="local")
            assert recv_until(carol, "joinedRoom", timeout=3)["memberCount"] >= 1
        assert time.monotonic() - started < 3
    finally:
        if fault == "frozen":
            os.kill(redis.process.pid, signal.SIGCONT)
        alice.close()
        bob.close()
    if fault == "frozen":
        eventually(lambda: health(node)["status"] != "degraded", timeout=15, message="health recovers")
        assert_alive(node)


def test_a_redis_frozen_past_the_probe_under_a_busy_room_runs_no_message_twice(cluster, redis):
    """Redis frozen for longer than the probe's second: the node dropped the connection, sent the publishes that were
    waiting on it again, and Redis ran both copies once it woke, so the reader got messages twice under two offsets.
    Now a publish whose fate is unknown is sent again only as a check-then-append, and nothing is lost either."""
    a, b = cluster(2, "--rooms-history-messages", "100000")
    traffic = Traffic(a, b, "busy")
    try:
        time.sleep(1)
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        eventually(lambda: health(a)["status"] == "ok" and health(b)["status"] == "ok", timeout=15, message="both healthy")
        time.sleep(2)
        received = traffic.finish()
    finally:
        traffic.sender.close()
        traffic.reader.close()
    missed = set(range(1, traffic.sent + 1)) - set(received)
    lost = missed - rejoin(b, "busy", first_gap(received.values()))
    history = [json.loads(line)["message"] for line in redis.cli("XRANGE", "switchboard:hist:busy", "-", "+").splitlines()
               if line.startswith("{")]
    report = {"sent": traffic.sent, "duplicates": traffic.duplicates, "missed_live": len(missed), "lost": len(lost),
              "history": len(history), "history_unique": len(set(history))}
    assert report["duplicates"] == 0 and report["lost"] == 0 and len(history) == len(set(history)) == traffic.sent, report
