"""A small TCP proxy on loopback to make a link slow, cut or refused on purpose.

Hand-written (asyncio, one background thread): the fault tests need four modes
switched at run time from the test's own thread, which no packaged proxy here offers.

    with TcpProxy("127.0.0.1", 27017) as proxy:   # listens on proxy.port
        proxy.delay(200)     # every chunk waits 200 ms each way
        proxy.delay(1500, requests_containing=b"DeleteMessageBatch")  # only those calls
        proxy.refuse()       # cut open connections; new ones are reset at once
        proxy.passthrough()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Final

PASS: Final = "pass"
DELAY: Final = "delay"
REFUSE: Final = "refuse"


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port
        self.mode = PASS
        self.delay_seconds = 0.0
        self.delay_only: bytes | None = None
        self.connections_made = 0
        self._loop = asyncio.new_event_loop()
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    # ------------------------------------------------------------ control

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def passthrough(self) -> None:
        self.mode, self.delay_seconds, self.delay_only = PASS, 0.0, None

    def delay(self, milliseconds: float, *, requests_containing: bytes | None = None) -> None:
        """Each chunk waits `milliseconds`; with `requests_containing`, only a chunk sent
        to the server that contains it (an HTTP request's headers name its operation)."""
        self.mode, self.delay_seconds = DELAY, milliseconds / 1000
        self.delay_only = requests_containing

    def cut(self) -> None:
        """Reset every open connection; new ones are accepted (clients reconnect)."""
        self._call(self._abort_all())

    def refuse(self) -> None:
        """Like the server being down: open connections reset, new ones reset at once."""
        self.mode = REFUSE
        self.cut()

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)  # type: ignore[arg-type]

    # ---------------------------------------------------------- the proxy

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._abort_all()

    async def _abort_all(self) -> None:
        for writer in list(self._links):
            _reset(writer)
        self._links.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == REFUSE:
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_w)
            return
        self.connections_made += 1
        self._links.update((client_w, server_w))
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w, upstream=True),
                self._pipe(server_r, client_w, upstream=False),
            )
        finally:
            for writer in (client_w, server_w):
                self._links.discard(writer)
                _reset(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self._held(data, upstream):
                    await asyncio.sleep(self.delay_seconds)
                if self.mode == REFUSE:
                    return
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            return

    def _held(self, data: bytes, upstream: bool) -> bool:
        if not self.delay_seconds:
            return False
        return self.delay_only is None or (upstream and self.delay_only in data)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a crashed server or a dropped link looks to the client."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class SilentServer:
    """Accepts connections on loopback and never answers, like a hung server; counts
    the connections, so a test can also tell that nothing was contacted.

    with SilentServer() as silent:    # listens on silent.port
        ...
        assert silent.connections == 0
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._socket.getsockname()[1])
        self.connections = 0
        self._held: list[socket.socket] = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent")

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            if self._closing:
                connection.close()
                return
            self.connections += 1
            self._held.append(connection)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()  # wake accept
        self._socket.close()
        self._thread.join(5)
        for connection in self._held:
            connection.close()


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
