// Switchboard browser client: one dependency-free ES module.
//   import { SwitchboardClient } from "/client/switchboard.js";
//   const client = new SwitchboardClient("wss://host/prod", { query: { userId: "alice" } });
//   client.on("message", (m) => console.log(m.sender, m.message));
//   client.connect(); client.joinRoom("lobby"); client.sendMessage("lobby", "hi");
//
// It reconnects with exponential backoff and full jitter (never after close()), sends a ping every `heartbeat` ms
// and drops a connection that stays silent for two of them, rejoins its rooms after a reconnect with the last
// offset seen (so the gateway replays what was missed, each message once), and buffers what is sent while away.

export class SwitchboardClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      token: undefined, // sent as a "bearer" subprotocol, so it stays out of URLs and logs
      query: {},
      reconnect: { base: 500, cap: 30000, maxAttempts: Infinity },
      heartbeat: 25000,
      outboundLimit: 1000,
      ...options,
    };
    this.random = Math.random; // the jitter source; tests may replace it
    this.state = "idle";
    this.rooms = new Map(); // roomId -> last offset seen
    this.buffer = [];
    this.listeners = new Map();
    this.attempt = 0;
    this.socket = null;
    this.closing = false;
  }

  on(event, listener) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(listener);
    return this;
  }

  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  emit(event, data) {
    for (const listener of this.listeners.get(event) ?? []) {
      try { listener(data); } catch (error) { console.error(error); }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  connect() {
    this.closing = false;
    this.open();
    return this;
  }

  open() {
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const query = new URLSearchParams(this.options.query).toString();
    const url = query ? this.url + (this.url.includes("?") ? "&" : "?") + query : this.url;
    const socket = this.options.token ? new WebSocket(url, ["bearer", this.options.token]) : new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.setState("open");
      this.emit("open");
      for (const [roomId, offset] of this.rooms) {
        const join = { action: "joinRoom", roomId };
        if (offset > 0) join.lastOffset = offset;
        socket.send(JSON.stringify(join));
      }
      const buffered = this.buffer.splice(0);
      for (const frame of buffered) socket.send(frame);
      this.heard();
    };
    socket.onmessage = (event) => {
      this.heard();
      this.receive(event.data);
    };
    socket.onclose = (event) => {
      clearTimeout(this.silence);
      clearInterval(this.pinger);
      if (this.socket !== socket) return;
      this.socket = null;
      this.emit("close", { code: event.code, reason: event.reason });
      if (this.closing) {
        this.setState("closed");
        return;
      }
      this.scheduleReconnect();
    };
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.socket?.readyState === WebSocket.OPEN && this.socket.send('{"action":"ping"}'), this.options.heartbeat);
  }

  // A connection silent for two heartbeats is dead (a network cut sends no close frame): drop it and reconnect.
  heard() {
    clearTimeout(this.silence);
    this.silence = setTimeout(() => this.socket?.close(4000, "heartbeat timeout"), this.options.heartbeat * 2);
  }

  scheduleReconnect() {
    const { base, cap, maxAttempts } = this.options.reconnect;
    this.attempt += 1;
    if (this.attempt > maxAttempts) {
      this.setState("closed");
      return;
    }
    this.setState("reconnecting");
    const delay = this.random() * Math.min(cap, base * 2 ** (this.attempt - 1)); // full jitter
    this.emit("reconnecting", { attempt: this.attempt, delay });
    this.timer = setTimeout(() => this.open(), delay);
  }

  receive(data) {
    if (typeof data !== "string") {
      this.emit("binary", data);
      return;
    }
    let frame;
    try { frame = JSON.parse(data); } catch { this.emit("frame", data); return; }
    switch (frame.action) {
      case "joinedRoom":
        if (this.rooms.get(frame.roomId) === 0) this.rooms.set(frame.roomId, frame.offset ?? 0);
        this.emit("joinedRoom", frame);
        break;
      case "message": {
        const last = this.rooms.get(frame.roomId);
        if (frame.offset > 0 && last !== undefined) {
          if (frame.offset <= last) return; // seen already: history and live can overlap around a rejoin
          this.rooms.set(frame.roomId, frame.offset);
        }
        this.emit("message", frame);
        break;
      }
      case "historyLost":
        if (this.rooms.has(frame.roomId)) this.rooms.set(frame.roomId, frame.oldestOffset - 1);
        this.emit("historyLost", frame);
        break;
      case "userJoined": case "userLeft": case "pong": case "error":
        this.emit(frame.action, frame);
        break;
      default:
        this.emit("frame", frame);
    }
  }

  // The seed client's API: send(action, payload) sends {"action": action, ...payload}.
  send(action, payload = {}) {
    const frame = typeof action === "string" ? JSON.stringify({ action, ...payload }) : JSON.stringify(action);
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(frame);
    } else {
      this.buffer.push(frame);
      if (this.buffer.length > this.options.outboundLimit) this.emit("dropped", this.buffer.splice(0, this.buffer.length - this.options.outboundLimit).length);
    }
    return this;
  }

  joinRoom(roomId) {
    if (this.rooms.has(roomId)) return this;
    this.rooms.set(roomId, 0);
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ action: "joinRoom", roomId }));
    return this;
  }

  leaveRoom(roomId) {
    if (!this.rooms.delete(roomId)) return this;
    return this.send("leaveRoom", { roomId });
  }

  sendMessage(roomId, message) {
    return this.send("sendMessage", { roomId, message });
  }

  close() {
    this.closing = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    if (this.socket) this.socket.close(1000, "client closed");
    else this.setState("closed");
  }
}
