"""Small helpers shared by the black-box tests."""
import json


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


def assert_quiet(ws):
    """Nothing else is queued for this client: a ping's pong is the very next frame."""
    send_json(ws, action="ping")
    assert recv_json(ws)["action"] == "pong"
