#!/usr/bin/env python3
"""A minimal Socket.IO server on python-socketio's AsyncServer and aiohttp speaking the seed rooms protocol as events,
as Switchboard serves it to Socket.IO clients (docs/socketio.md): `joinRoom {roomId}` answers `joinedRoom` (with the
members) and tells the room `userJoined`; `sendMessage {roomId, message}` emits `message` to the whole room (the
sender too, as Switchboard does) with `action`, `roomId`, `message`, `sender`, `timestamp` and a per-room `offset`.
The user is the handshake's `userId` query parameter. Default ping interval and timeout (25 s, 20 s), no CORS check,
asyncio's default event loop.

    .build/peers/socketio-venv/bin/python bench/peers/socketio/server.py [port=8083]
"""
import sys
import time
from urllib.parse import parse_qs

import socketio
from aiohttp import web

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8083
sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
users = {}  # sid -> userId
offsets = {}  # roomId -> last offset


def now_ms():
    return int(time.time() * 1000)


@sio.event
async def connect(sid, environ):
    users[sid] = parse_qs(environ.get("QUERY_STRING", "")).get("userId", ["anonymous"])[0]


@sio.event
async def disconnect(sid, reason=None):
    for room in sio.rooms(sid):
        if room != sid:
            await sio.emit("userLeft", {"action": "userLeft", "roomId": room, "userId": users.get(sid), "timestamp": now_ms()},
                           room=room, skip_sid=sid)
    users.pop(sid, None)


@sio.event
async def joinRoom(sid, data):
    room = data.get("roomId") if isinstance(data, dict) else None
    if not isinstance(room, str) or not room:
        return await sio.emit("error", {"action": "error", "message": "roomId required", "timestamp": now_ms()}, to=sid)
    await sio.enter_room(sid, room)
    members = [users.get(member) for member, _ in sio.manager.get_participants("/", room)]
    await sio.emit("joinedRoom", {"action": "joinedRoom", "roomId": room, "members": members}, to=sid)
    await sio.emit("userJoined", {"action": "userJoined", "roomId": room, "userId": users.get(sid), "timestamp": now_ms()},
                   room=room, skip_sid=sid)


@sio.event
async def sendMessage(sid, data):
    room = data.get("roomId") if isinstance(data, dict) else None
    if room not in sio.rooms(sid):
        return await sio.emit("error", {"action": "error", "message": "Not in room", "timestamp": now_ms()}, to=sid)
    offsets[room] = offsets.get(room, 0) + 1
    await sio.emit("message", {"action": "message", "roomId": room, "message": data.get("message"), "sender": users.get(sid),
                               "timestamp": now_ms(), "offset": offsets[room]}, room=room)


app = web.Application()
sio.attach(app)
web.run_app(app, host="127.0.0.1", port=PORT, print=None, access_log=None)
