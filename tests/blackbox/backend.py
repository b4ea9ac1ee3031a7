"""A real HTTP backend for integration tests: records every event it receives and answers as a test tells it."""
import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Backend:
    def __init__(self, host: str = "127.0.0.1"):
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.all_events: list[dict] = []
        # route key -> callable(event) -> (http_status, reply object or bytes); default: 200 {"statusCode": 200}
        self.replies: dict = {}
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                event["_headers"] = dict(self.headers)
                backend.all_events.append(event)
                backend.events.put(event)
                reply = backend.replies.get(event["requestContext"]["routeKey"], lambda e: (200, {"statusCode": 200}))
                status, payload = reply(event)
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/2015-03-31/functions/function/invocations"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, route=None, timeout=5) -> dict:
        """The next event (for `route`, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if route is None or event["requestContext"]["routeKey"] == route:
                return event

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
