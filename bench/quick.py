"""Quick measurements of a running gateway until `switchboard-bench` exists: idle memory per connection and
closed-loop echo round trips. The Python client is slower than the server, so `echo` gives a lower bound.

    python bench/quick.py idle  --url ws://127.0.0.1:8080/ws --pid PID --connections 10000
    python bench/quick.py echo  --url ws://127.0.0.1:8080/ws --clients 50 --seconds 10
"""
import argparse
import asyncio
import json
import time

from websockets.asyncio.client import connect


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle(url: str, pid: int, count: int, rate: int) -> dict:
    before = rss_kib(pid)
    connections, started = [], time.monotonic()
    for index in range(count):
        connections.append(await connect(url, compression=None, ping_interval=None, max_queue=1))
        if index % 100 == 99:  # bounded connect rate
            await asyncio.sleep(max(0.0, (index + 1) / rate - (time.monotonic() - started)))
    await asyncio.sleep(2)
    after = rss_kib(pid)
    await asyncio.gather(*(ws.close() for ws in connections))
    return {"scenario": "idle", "connections": count, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": round((after - before) / count, 2)}


async def echo(url: str, clients: int, seconds: float) -> dict:
    payload = "x" * 64
    stop = time.monotonic() + seconds
    counts = [0] * clients

    async def run(index: int) -> None:
        async with connect(url, compression=None, ping_interval=None) as ws:
            while time.monotonic() < stop:
                await ws.send(payload)
                await ws.recv()
                counts[index] += 1

    await asyncio.gather(*(run(i) for i in range(clients)))
    return {"scenario": "echo", "clients": clients, "seconds": seconds, "round_trips_per_second": round(sum(counts) / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["idle", "echo"])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--pid", type=int)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.scenario == "idle":
        result = asyncio.run(idle(args.url, args.pid, args.connections, args.rate))
    else:
        result = asyncio.run(echo(args.url, args.clients, args.seconds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
