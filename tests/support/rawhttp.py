"""A minimal HTTP/1.1 client over a raw socket, for tests that watch the connection itself
(who closes it, when, and which headers came back): httpx and the SDKs hide exactly that."""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One TCP connection; requests are sent and responses read explicitly."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: the advertised window follows it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.port = port
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{self.port}"]
        all_headers = dict(headers or {})
        if body is not None:
            all_headers.setdefault("content-type", "application/json")
            all_headers["content-length"] = str(len(body))
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self._buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_head(self) -> tuple[int, dict[str, str]]:
        status = int(self._line().split()[1])
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def read_chunk(self) -> bytes:
        """One chunk of a chunked body (b"" at its end)."""
        size = int(self._line().split(b";")[0], 16)
        data = self._exactly(size)
        self._exactly(2)
        return data

    def read_response(self) -> Response:
        status, headers = self.read_head()
        if headers.get("transfer-encoding") == "chunked":
            parts = []
            while chunk := self.read_chunk():
                parts.append(chunk)
            return Response(status, headers, b"".join(parts))
        return Response(status, headers, self._exactly(int(headers.get("content-length", "0"))))

    def closed_by_peer(self, wait: float = 0.0) -> bool:
        """True when the server has closed the connection (EOF or reset) within `wait` s."""
        if self._buf:
            return False
        ready, _, _ = select.select([self.sock], [], [], wait)
        if not ready:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            return True

    def wait_closed(self, timeout: float) -> float | None:
        """Seconds until the server closed the connection, or None if it stayed open."""
        start = time.monotonic()
        if self.closed_by_peer(timeout):
            return time.monotonic() - start
        return None

    def close(self) -> None:
        self.sock.close()
