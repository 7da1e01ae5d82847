"""CoalescingTransport: the writes of one loop turn reach the socket as one write, and
closing, aborting and a vanished peer keep their meaning."""

from __future__ import annotations

import asyncio

from service.http_protocol import CoalescingTransport


class SocketTransport(asyncio.Transport):
    """Stands in for the socket's transport (the process edge): records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.events.append("pause_reading")


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_the_writes_of_one_turn_leave_as_one() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    transport.write(head)
    transport.write(b"ok")
    assert socket.writes == []
    assert transport.get_write_buffer_size() == len(head) + 2

    await next_turn()
    assert socket.writes == [head + b"ok"]
    assert transport.get_write_buffer_size() == 0


async def test_writes_of_later_turns_leave_separately() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    transport.write(b"data: 1\n\n")
    await next_turn()
    transport.write(b"data: 2\n\n")
    await next_turn()

    assert socket.writes == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_a_bytearray_is_copied_when_held() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    buffer = bytearray(b"first")

    transport.write(buffer)
    buffer[:] = b"later"
    await next_turn()

    assert socket.writes == [b"first"]


async def test_close_sends_what_is_held_first() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    transport.write(b"goodbye")
    transport.close()
    await next_turn()

    assert socket.events == ["write", "close"]
    assert socket.writes == [b"goodbye"]


async def test_abort_drops_what_is_held() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    transport.write(b"never sent")
    transport.abort()
    await next_turn()

    assert socket.events == ["abort"]


async def test_nothing_is_written_after_the_peer_went_away() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    transport.write(b"too late")
    socket.closing = True  # connection_lost came first
    await next_turn()

    assert socket.writes == []
    assert transport.is_closing()


async def test_other_calls_reach_the_socket_transport() -> None:
    socket = SocketTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())

    transport.pause_reading()

    assert socket.events == ["pause_reading"]
