"""A thin HTTP adapter that hosts `handlers.py` for Switchboard's HTTP integrations: each POST body is the Lambda-proxy
event, the handler's return value is the reply. It answers on any path, including the Lambda runtime interface
emulator's `/2015-03-31/functions/function/invocations`, so Switchboard's config is the same for both.

    python server.py [PORT]        # default 9000
"""
import json
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import handlers


class Adapter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        try:
            reply = handlers.handler(event)
        except Exception as error:  # the shape the Lambda emulator uses for a handler that raised
            traceback.print_exc()
            reply = {"errorMessage": str(error), "errorType": type(error).__name__}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("127.0.0.1", port), Adapter).serve_forever()
