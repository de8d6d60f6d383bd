"""uvicorn's httptools protocol with each response's head sent together with its body.

uvicorn writes a response's head (status line and headers) when the app starts the response and
the body when the app sends it: two `send()` calls and two TCP segments per response, so a client
on another core may wake for the head, find the body missing and wake again. On this kind of VM a
send to a sleeping reader costs ~25 µs and a wake-up ~50–200 µs of CPU. `OneSendHttpProtocol`
holds a head back until the body's first write and sends both at once; a head whose body does
not follow in the same loop turn (a stream that starts later) goes out alone at the end of it,
so nothing waits longer than a turn and the bytes keep their order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"


class _HeadWithBodyTransport(asyncio.Transport):
    """A transport that holds back a response head until the next write (or the end of the turn)."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._inner = inner
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._inner.write(head + bytes(data))
        elif data[:9] == _HEAD_START and data[-4:] == _HEAD_END:
            self._head = bytes(data)
            self._loop.call_soon(self._send_head)
        else:
            self._inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _send_head(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._inner.is_closing():
            self._inner.write(head)

    def close(self) -> None:
        self._send_head()
        self._inner.close()

    def write_eof(self) -> None:
        self._send_head()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def abort(self) -> None:
        self._head = None
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + (len(self._head) if self._head is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


class OneSendHttpProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=OneSendHttpProtocol)`: httptools, one send per ordinary response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBodyTransport(transport, self.loop))
