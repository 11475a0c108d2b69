"""A TCP proxy in front of a test server (in a thread of its own): optionally TLS-terminating, and
optionally holding requests the way a PACS that stops answering does."""
from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def tcp_proxy(backend_port: int, ssl_ctx: ssl.SSLContext | None = None,
              hold: Callable[[bytes], bool] | None = None) -> Iterator[int]:
    """A proxy on 127.0.0.1 to ``backend_port``; yields its port. Each chunk the client sends is
    passed to ``hold``: when it answers True, that chunk and everything after it on the connection
    is swallowed (no answer comes back) until the client gives up and closes it."""
    loop = asyncio.new_event_loop()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, check: bool) -> None:
        held = False
        try:
            while data := await reader.read(65536):
                held = held or (check and hold is not None and hold(data))
                if not held:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        back_reader, back_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(pump(reader, back_writer, True), pump(back_reader, writer, False))

    async def open_server() -> asyncio.Server:
        return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl_ctx)

    async def shutdown() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop.set_exception_handler(lambda loop, context: None)  # failed handshakes and resets are expected here
    server = loop.run_until_complete(open_server())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
