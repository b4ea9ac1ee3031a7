"""Seed 004's frontend as a python-socketio client (the same calls as socket.io-client's): connect to `/chat` with a
JWT in `auth`, join a room, send, show typing, and print what arrives.

    python client.py [SWITCHBOARD_URL] [USER] [SECRET]
"""
import asyncio
import sys
import time

import jwt
import socketio

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
USER = sys.argv[2] if len(sys.argv) > 2 else "alice"
SECRET = sys.argv[3] if len(sys.argv) > 3 else "change-me-to-a-secret-of-at-least-32-bytes"


async def main():
    client = socketio.AsyncClient(reconnection=False)

    @client.on("*", namespace="/chat")
    async def anything(event, *args):
        print(event, *args, flush=True)

    token = jwt.encode({"sub": USER, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
    await client.connect(URL, namespaces=["/chat"], auth={"token": token}, transports=["websocket", "polling"])
    print("joined:", await client.call("joinRoom", {"roomId": "lobby"}, namespace="/chat"), flush=True)
    print("typing acked:", await client.call("typing", {"roomId": "lobby"}, namespace="/chat"), flush=True)
    await client.emit("sendMessage", {"roomId": "lobby", "message": f"hello from {USER}"}, namespace="/chat")
    await asyncio.sleep(1)
    await client.disconnect()


asyncio.run(main())
