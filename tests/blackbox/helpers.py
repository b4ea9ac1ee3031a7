"""Small helpers shared by the black-box tests."""
import json
import os
import subprocess
import time
from pathlib import Path


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
