"""A deliberately low-level WebSocket client for sending what well-behaved libraries refuse to send."""
import base64
import os
import socket
import struct

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWebSocket:
    def __init__(self, port: int, path: str = "/ws", timeout: float = 5.0, headers: dict | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.decode().partition(":") for line in head.split(b"\r\n")[1:])
        }
        self.last_rsv = 0  # the RSV bits of the first frame of the last data message received
        if self.status != 101:
            raise ConnectionError(f"handshake answered {self.status}: {head!r}")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> None:
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, (0x80 if mask else 0) | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
        else:
            header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            header += key
        self.sock.sendall(header + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read_exact(2)
        self.last_fin = bool(first & 0x80)
        if first & 0x0F in (OP_TEXT, OP_BINARY):
            self.last_rsv = (first >> 4) & 0x7
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        return first & 0x0F, self._read_exact(length)

    def recv_data(self) -> tuple[int, bytes]:
        """The next data or close frame, answering pings on the way."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            return opcode, payload

    def expect_close(self) -> tuple[int, str]:
        """Reads until the server's close frame and returns its code and reason."""
        while True:
            opcode, payload = self.recv_data()
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode()

    def close(self) -> None:
        self.sock.close()
