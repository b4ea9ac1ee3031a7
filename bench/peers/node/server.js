// An idiomatic Node server on `ws` speaking the seed rooms protocol (DESIGN §3).
const { WebSocketServer } = require("ws");
const port = Number(process.argv[2] || 8082);
const rooms = new Map(); // roomId -> Set<ws>
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

function broadcast(room, frame, except) {
  const payload = JSON.stringify(frame);
  for (const ws of rooms.get(room) || []) if (ws !== except && ws.readyState === 1) ws.send(payload);
}

wss.on("connection", (ws, request) => {
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
        return broadcast(room, { action: "message", roomId: room, message: msg.message, sender: ws.userId, timestamp: Date.now() });
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
});
