"""`data_waiting`: the peek that keeps an idle-close from cutting a request already sent.
(Under uvloop, in production, tests/integration/test_retire.py runs it on every idle close.)"""

from __future__ import annotations

import socket
from typing import Any

from zai_proxy.server.http_protocol import data_waiting


class _Transport:
    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


def test_data_waiting_sees_unread_bytes_without_consuming_them() -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    transport: Any = _Transport(server)
    try:
        assert not data_waiting(transport)
        client.sendall(b"GET / HTTP/1.1\r\n")
        assert data_waiting(transport)
        assert data_waiting(transport), "peeking consumes nothing"
        assert server.recv(100) == b"GET / HTTP/1.1\r\n"
        assert not data_waiting(transport)
        client.close()
        assert not data_waiting(transport), "a peer that left sends nothing to answer"
    finally:
        server.close()
    assert not data_waiting(transport), "a closed socket is not an error"
    assert not data_waiting(_Transport(None))  # type: ignore[arg-type]
