// An idiomatic Node server on `ws` speaking the seed rooms protocol (DESIGN §3).
// Usage: NODE_PATH=/usr/share/nodejs node server.js [--deflate] [port=8082] [redisHost:port]
// With --deflate, ws accepts permessage-deflate with its own defaults (context takeover on both sides) except the
// threshold, 256 bytes as Switchboard's: each send compresses for its connection, so a room message is compressed
// once per member.
// With the optional Redis address (multi-node mode), sendMessage PUBLISHes the encoded frame to channel room:<roomId>
// and a duplicate client PSUBSCRIBEs room:* and delivers each payload to the local members of that room, so instances
// behind no load balancer fan out to each other's members. Presence stays node-local: joinedRoom's member list and
// userJoined/userLeft only cover this node.
const { WebSocketServer } = require("ws");
const deflate = process.argv.includes("--deflate");
const args = process.argv.slice(2).filter((arg) => arg !== "--deflate");
const port = Number(args[0] || 8082);
const redisAddr = args[1];
const rooms = new Map(); // roomId -> Set<ws>

function deliver(room, payload, except) {
  for (const ws of rooms.get(room) || []) if (ws !== except && ws.readyState === 1) ws.send(payload);
}

function broadcast(room, frame, except) {
  deliver(room, JSON.stringify(frame), except);
}

let publish = (room, frame) => broadcast(room, frame); // a room message to its members on every node

async function connectRedis() {
  const { createClient } = require("redis");
  const pub = createClient({ url: `redis://${redisAddr}` });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on("error", (err) => console.error("redis:", err.message));
  await Promise.all([pub.connect(), sub.connect()]);
  await sub.pSubscribe("room:*", (payload, channel) => deliver(channel.slice("room:".length), payload));
  publish = (room, frame) => pub.publish(`room:${room}`, JSON.stringify(frame)).catch((err) => console.error("redis publish:", err.message));
}

function serve() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: deflate ? { threshold: 256 } : false });
  wss.on("connection", onConnection);
}

function onConnection(ws, request) {
  ws.userId = new URL(request.url, "http://x").searchParams.get("userId") || "anonymous";
  ws.rooms = new Set();
  ws.on("message", (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch { return ws.send(JSON.stringify({ action: "error", message: "Invalid JSON", timestamp: Date.now() })); }
    const room = msg.roomId;
    switch (msg.action) {
      case "ping": return ws.send(JSON.stringify({ action: "pong", timestamp: Date.now() }));
      case "joinRoom":
        if (!rooms.has(room)) rooms.set(room, new Set());
        rooms.get(room).add(ws);
        ws.rooms.add(room);
        ws.send(JSON.stringify({ action: "joinedRoom", roomId: room, members: [...rooms.get(room)].map((m) => m.userId) }));
        return broadcast(room, { action: "userJoined", roomId: room, userId: ws.userId, timestamp: Date.now() }, ws);
      case "leaveRoom":
        rooms.get(room)?.delete(ws);
        ws.rooms.delete(room);
        return broadcast(room, { action: "userLeft", roomId: room, userId: ws.userId, timestamp: Date.now() });
      case "sendMessage":
        if (!ws.rooms.has(room)) return ws.send(JSON.stringify({ action: "error", message: "Not in room", timestamp: Date.now() }));
        return publish(room, { action: "message", roomId: room, message: msg.message, sender: ws.userId, timestamp: Date.now() });
      default:
        return ws.send(JSON.stringify({ action: "error", message: "Unknown action", timestamp: Date.now() }));
    }
  });
  ws.on("close", () => {
    for (const room of ws.rooms) {
      rooms.get(room)?.delete(ws);
      broadcast(room, { action: "userLeft", roomId: room, userId: ws.userId, timestamp: Date.now() });
    }
  });
}

if (redisAddr) connectRedis().then(serve, (err) => { console.error("redis:", err.message); process.exit(1); });
else serve();
