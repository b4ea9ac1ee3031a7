"""Small helpers shared by the black-box tests."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from websockets.sync.client import connect


def recv_json(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def send_json(ws, **frame):
    ws.send(json.dumps(frame))


def recv_until(ws, action, timeout=5):
    """The next frame with this action, skipping others (presence events and the like)."""
    while True:
        frame = recv_json(ws, timeout)
        if frame["action"] == action:
            return frame


def eventually(condition, timeout=10, message="condition", interval=0.05):
    """Polls `condition` until it holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s")
        time.sleep(interval)


def run_bench(*args) -> dict:
    """Runs the switchboard-bench built beside the binary under test; its JSON result line."""
    bench = Path(os.environ["SWITCHBOARD_BIN"]).with_name("switchboard-bench")
    run = subprocess.run([str(bench), *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-800:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def assert_quiet(ws):
    """Nothing else is queued for this client: a ping's pong is the very next frame."""
    send_json(ws, action="ping")
    assert recv_json(ws)["action"] == "pong"


def joined(ws, room, **extra):
    send_json(ws, action="joinRoom", roomId=room, **extra)
    return recv_until(ws, "joinedRoom")


def rejoin(node, room: str, after: int) -> set:
    """What a client rejoining `room` with `lastOffset=after` is replayed."""
    replayed = set()
    with connect(f"{node.url}/ws?userId=rejoiner") as ws:
        joined(ws, room, lastOffset=after)
        while True:
            try:
                frame = json.loads(ws.recv(timeout=2))
            except TimeoutError:
                return replayed
            if frame.get("action") == "message":
                replayed.add(frame["message"])
            else:
                assert frame.get("action") == "joinedRoom", frame  # never historyLost


def first_gap(offsets) -> int:
    """The last offset before the first one missing (what a client rejoins with)."""
    offsets = sorted(o for o in offsets if o > 0)
    return next((o for o, n in zip(offsets, offsets[1:]) if n != o + 1), offsets[-1] if offsets else 0)


class Traffic:
    """One sender on node a publishing to a room at a steady rate, one reader on node b counting what arrives."""

    def __init__(self, a, b, room: str, rate: float = 50):
        self.room, self.rate = room, rate
        self.sender = connect(f"{a.url}/ws?userId=sender")
        self.reader = connect(f"{b.url}/ws?userId=reader")
        joined(self.sender, room)
        joined(self.reader, room)
        self.sent = 0
        self.duplicates = 0  # messages the reader got more than once
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.sent += 1
            send_json(self.sender, action="sendMessage", roomId=self.room, message=self.sent)
            time.sleep(1 / self.rate)

    def finish(self):
        self.stop.set()
        self.thread.join()
        time.sleep(1)
        received = {}
        while True:
            try:
                frame = json.loads(self.reader.recv(timeout=1))
            except TimeoutError:
                break
            if frame.get("action") == "message":
                self.duplicates += frame["message"] in received
                received[frame["message"]] = frame["offset"]
        return received
