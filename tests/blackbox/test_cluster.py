"""Several gateway nodes over a real redis-server (and haproxy in front), as a cluster runs in production."""
import signal

import boto3
import pytest
from websockets.sync.client import connect

from backend import Backend
from conftest import KEY_ID, SECRET, Redis, api
from helpers import assert_quiet, eventually, recv_json, recv_until, send_json


def test_room_fan_out_crosses_nodes_with_one_publish_per_message(cluster, redis):
    a, b = cluster()
    with connect(f"{a.url}/ws?userId=alice") as alice, connect(f"{b.url}/ws?userId=bob") as bob, \
            connect(f"{b.url}/ws?userId=carol") as carol:
        for ws in (alice, bob, carol):
            send_json(ws, action="joinRoom", roomId="lobby")
            recv_until(ws, "joinedRoom")
        assert recv_until(alice, "userJoined")["userId"] in ("bob", "carol")
        publishes = int(redis.cli("INFO", "commandstats").split("cmdstat_publish:calls=")[1].split(",")[0]) \
            if "cmdstat_publish" in redis.cli("INFO", "commandstats") else 0
        for n in range(10):
            send_json(alice, action="sendMessage", roomId="lobby", message=n)
        for ws in (alice, bob, carol):
            assert [recv_until(ws, "message")["message"] for _ in range(10)] == list(range(10))
        after = int(redis.cli("INFO", "commandstats").split("cmdstat_publish:calls=")[1].split(",")[0])
        assert after - publishes == 10  # one PUBLISH per message, whatever the recipients
        status, stats = b.http("/health/websocket")
        assert stats["status"] == "healthy"


def test_management_api_reaches_connections_on_any_node(cluster):
    a, b = cluster()
    with connect(f"{a.url}/prod?userId=remote") as ws:
        client = boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{b.port}/prod", region_name="us-east-1",
                              aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        [cid] = [item["connectionId"] for item in api(b, "GET", "/@connections")[1]["items"] if item["userId"] == "remote"]
        client.post_to_connection(ConnectionId=cid, Data=b"via node b")
        assert ws.recv(timeout=5) == "via node b"
        assert client.get_connection(ConnectionId=cid)["Identity"]["SourceIp"] == "127.0.0.1"
        assert api(b, "PUT", f"/@connections/{cid}/rooms/ops")[0] == 204
        assert recv_json(ws)["action"] == "joinedRoom"
        client.delete_connection(ConnectionId=cid)
        with pytest.raises(Exception):
            ws.recv(timeout=5)
    eventually(lambda: api(b, "GET", f"/@connections/{cid}")[0] == 410, message="connection gone")
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId=cid)


def test_users_and_broadcast_reach_every_node(cluster):
    a, b = cluster()
    with connect(f"{a.url}/ws?userId=dana") as d1, connect(f"{b.url}/ws?userId=dana") as d2, connect(f"{b.url}/ws?userId=eve") as eve:
        assert_quiet(d1), assert_quiet(d2), assert_quiet(eve)
        assert api(a, "POST", "/@users/dana", b"to dana") == (200, {"delivered": 1})  # counted on node a only
        assert d1.recv(timeout=5) == "to dana" and d2.recv(timeout=5) == "to dana"
        assert api(b, "POST", "/@broadcast", b"all")[0] == 200
        for ws in (d1, d2, eve):
            assert ws.recv(timeout=5) == "all"
        assert_quiet(eve)


def test_ingress_channels_from_backends(start_server, redis):
    nodes = [start_server("--redis-url", redis.url, "--redis-ingress-broadcast", "order:notifications",
                          "--redis-ingress-room-pattern", "chat:*") for _ in range(2)]
    with connect(f"{nodes[0].url}/ws") as one, connect(f"{nodes[1].url}/ws") as two:
        send_json(two, action="joinRoom", roomId="lobby")
        recv_json(two)
        assert_quiet(one)
        eventually(lambda: redis.cli("PUBSUB", "NUMSUB", "order:notifications").endswith("2"), message="subscribed")
        redis.cli("PUBLISH", "order:notifications", '{"order":1}')
        assert recv_json(one) == {"order": 1} and recv_json(two) == {"order": 1}
        # A probe to an empty room reports how many nodes hold the pattern subscription.
        eventually(lambda: redis.cli("PUBLISH", "chat:probe", "x") == "2", message="pattern subscribed on both nodes")
        redis.cli("PUBLISH", "chat:lobby", "room news")
        assert two.recv(timeout=5) == "room news"
        assert_quiet(one)


def test_a_killed_node_is_swept_by_a_survivor(cluster, redis):
    backend = Backend()
    try:
        a, b, c = cluster(3, "--integrations", f"$disconnect={backend.url}")
        with connect(f"{a.url}/ws?userId=watcher") as watcher:
            send_json(watcher, action="joinRoom", roomId="r")
            recv_json(watcher)
            victims = [connect(f"{b.url}/ws?userId=victim{i}") for i in range(2)]
            for ws in victims:
                send_json(ws, action="joinRoom", roomId="r")
                recv_until(ws, "joinedRoom")
            assert {recv_until(watcher, "userJoined")["userId"] for _ in range(2)} == {"victim0", "victim1"}
            b.process.send_signal(signal.SIGKILL)  # no drain, no $disconnect from the node itself
            b.process.wait()
            left = {recv_until(watcher, "userLeft", timeout=15)["userId"] for _ in range(2)}
            assert left == {"victim0", "victim1"}
            events = [backend.next("$disconnect", timeout=15) for _ in range(2)]
            assert sorted(e["requestContext"]["disconnectStatusCode"] for e in events) == [1006, 1006]
            with pytest.raises(Exception):
                backend.next("$disconnect", timeout=2)  # exactly once, though two survivors could sweep
            assert redis.cli("HLEN", "switchboard:node-conns:node1") == "0"
            assert [m["userId"] for m in api(a, "GET", "/@rooms/r/members")[1]["items"]] == ["watcher"]
            for ws in victims:
                ws.close()
    finally:
        backend.stop()


def test_redis_restart_degrades_then_recovers(cluster, redis):
    a, b = cluster()
    with connect(f"{a.url}/ws?userId=x") as x, connect(f"{b.url}/ws?userId=y") as y:
        for ws in (x, y):
            send_json(ws, action="joinRoom", roomId="r")
            recv_until(ws, "joinedRoom")
        recv_until(x, "userJoined")
        redis.stop()
        eventually(lambda: a.http("/health") == (200, {"status": "degraded", "redis": "unreachable"}), message="degraded")
        send_json(x, action="ping")  # local work goes on
        assert recv_json(x)["action"] == "pong"
        restarted = Redis(port=redis.port)
        try:
            eventually(lambda: a.http("/health")[1] == {"status": "ok"} and b.http("/health")[1] == {"status": "ok"}, timeout=15)
            eventually(lambda: restarted.cli("HLEN", "switchboard:room:r") == "2", timeout=15, message="re-registered")
            send_json(y, action="sendMessage", roomId="r", message="after restart")
            assert recv_until(x, "message")["message"] == "after restart"
        finally:
            restarted.stop()


def test_haproxy_in_front_of_two_nodes(cluster, haproxy):
    a, b = cluster()
    port = haproxy(a, b)
    clients = [connect(f"ws://127.0.0.1:{port}/ws?userId=c{i}") for i in range(6)]
    try:
        for ws in clients:
            send_json(ws, action="joinRoom", roomId="everyone")
            recv_until(ws, "joinedRoom")
        counts = [a.http("/health/websocket")[1]["connections"], b.http("/health/websocket")[1]["connections"]]
        assert counts[0] > 0 and counts[1] > 0 and sum(counts) == 6  # spread, no stickiness needed
        send_json(clients[0], action="sendMessage", roomId="everyone", message="through haproxy")
        for ws in clients:
            assert recv_until(ws, "message")["message"] == "through haproxy"
    finally:
        for ws in clients:
            ws.close()


def test_history_is_shared_through_redis_streams(cluster, redis):
    a, b = cluster()
    with connect(f"{a.url}/ws?userId=w") as writer:
        send_json(writer, action="joinRoom", roomId="shared")
        recv_json(writer)
        for n in range(4):
            send_json(writer, action="sendMessage", roomId="shared", message=n)
        offsets = [recv_until(writer, "message")["offset"] for _ in range(4)]
        assert offsets == [1, 2, 3, 4]
        assert redis.cli("XLEN", "switchboard:hist:shared") == "4"
        with connect(f"{b.url}/ws?userId=r") as reader:  # the other node, after a reconnect
            send_json(reader, action="joinRoom", roomId="shared", lastOffset=2)
            assert recv_json(reader)["offset"] == 4
            assert [recv_json(reader)["message"] for _ in range(2)] == [2, 3]
            send_json(writer, action="sendMessage", roomId="shared", message="live")
            live = recv_until(reader, "message")
            assert (live["message"], live["offset"]) == ("live", 5)
