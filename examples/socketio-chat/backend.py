"""The parts of a NestJS Socket.IO gateway that are application logic, as an HTTP backend for Switchboard. Each
request body is an API Gateway Lambda-proxy event; the reply is the Lambda's. What the gateway did itself (rooms,
heartbeats, the connection registry, sticky sessions) is Switchboard's job now.

    @SubscribeMessage('typing')        -> the `typing` route: this handler; its reply body is the client's ack
    handleConnection(client)           -> `$connect`: refuse with a non-2xx status (the client gets connect_error)
    this.server.to(room).emit(...)     -> POST /@rooms/{room} on the management API
    client.emit(...)                   -> POST /@connections/{connectionId}

    python backend.py [PORT] [SWITCHBOARD_URL] [MANAGEMENT_TOKEN]
"""
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
SWITCHBOARD = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8080"
TOKEN = sys.argv[3] if len(sys.argv) > 3 else "local-management-token"


def manage(path, payload):
    """One management API call; the frame reaches Socket.IO clients as an event named by its `action`."""
    request = urllib.request.Request(f"{SWITCHBOARD}{path}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def connect(event):
    user = (event["requestContext"].get("authorizer") or {}).get("sub")
    if user == "banned":
        return {"statusCode": 403, "body": json.dumps({"message": "This user is banned"})}
    return {"statusCode": 200}


def typing(event):
    context = event["requestContext"]
    body = json.loads(event["body"])
    user = (context.get("authorizer") or {}).get("sub", "anonymous")
    manage(f"/@rooms/{body['roomId']}", {"action": "typing", "roomId": body["roomId"], "userId": user})
    return {"statusCode": 200, "body": json.dumps({"ok": True, "roomId": body["roomId"]})}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        route = event["requestContext"]["routeKey"]
        reply = {"$connect": connect, "typing": typing}.get(route, lambda _: {"statusCode": 200})(event)
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
