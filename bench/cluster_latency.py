"""Cross-node room delivery over Redis, measured until `switchboard-bench cluster-fanout` exists: a sender on one
node, a receiver on another, messages stamped with their send time (same machine, same clock).

    python bench/cluster_latency.py ws://127.0.0.1:8081/ws ws://127.0.0.1:8082/ws [--messages 5000] [--rate 1000]
"""
import argparse
import asyncio
import json
import time

from websockets.asyncio.client import connect


async def main(sender_url, receiver_url, messages, rate):
    async with connect(sender_url, compression=None) as sender, connect(receiver_url, compression=None, max_queue=None) as receiver:
        for ws in (sender, receiver):
            await ws.send(json.dumps({"action": "joinRoom", "roomId": "bench"}))
        for ws in (sender, receiver):
            while json.loads(await ws.recv())["action"] != "joinedRoom":
                pass
        await asyncio.sleep(0.5)
        latencies = []

        async def receive():
            while len(latencies) < messages:
                frame = json.loads(await receiver.recv())
                if frame["action"] == "message":
                    latencies.append(time.perf_counter() - frame["message"]["t"])

        receiving = asyncio.create_task(receive())
        started = time.perf_counter()
        for n in range(messages):
            await sender.send(json.dumps({"action": "sendMessage", "roomId": "bench", "message": {"t": time.perf_counter()}}))
            if rate:
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
        await asyncio.wait_for(receiving, 60)
        elapsed = time.perf_counter() - started
        latencies.sort()
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)
        print(json.dumps({"scenario": "cluster-room", "messages": messages, "rate": rate, "delivered_per_second": round(messages / elapsed),
                          "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(latencies[-1] * 1000, 3)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("sender")
    parser.add_argument("receiver")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=1000, help="messages per second; 0 sends as fast as possible")
    args = parser.parse_args()
    asyncio.run(main(args.sender, args.receiver, args.messages, args.rate))
