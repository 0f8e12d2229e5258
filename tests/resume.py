"""A resuming ``pine.watch.v1`` client, as ``docs/protocol.md`` describes it.

It keeps ``file`` (from ``open`` / ``rotated``) and ``offset`` (the bytes it
holds of that file) and reconnects with ``?offset=N&file=ID`` whenever the
connection ends (1001 at a restart, 1006 when a worker dies), so what it holds
must be the file's bytes exactly once. It runs on asyncio (the ``websockets``
asyncio client), so that one test thread drives hundreds of clients; it
records every close code it saw and every worker it was served by.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

SUBPROTOCOL = "pine.watch.v1"


@dataclass
class ResumingClient:
    """Follow ``url`` (``ws://host/logs/ws/<name>``) from byte 0, resuming across drops."""

    url: str
    data: bytearray = field(default_factory=bytearray)
    file_id: str | None = None
    closes: list[int] = field(default_factory=list)
    connects: int = 0
    refused: list[str] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    #: set by the test once the writer is done: the client stops when it holds this many bytes
    target: int | None = None

    @property
    def offset(self) -> int:
        return len(self.data)

    def query(self) -> str:
        return "?" + urlencode({"offset": self.offset, "file": self.file_id or ""})

    @property
    def done(self) -> bool:
        return self.target is not None and self.offset >= self.target

    async def session(self) -> None:
        """One connection: read until it ends or the client is done; record how it ended."""
        async with connect(self.url + self.query(), subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                           open_timeout=20, close_timeout=5, ping_interval=None,
                           max_size=None, proxy=None) as ws:
            self.connects += 1
            try:
                while not self.done:
                    try:
                        message = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):
                        self.data += message
                        continue
                    event = json.loads(message)
                    self.events.append(event)
                    if event["event"] == "open":
                        assert event["offset"] == self.offset, (event, self.offset)
                        self.file_id = event["file"]
                    elif event["event"] == "rotated":
                        raise AssertionError(f"unexpected rotation: {event}")
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd is not None else 1006)

    async def follow(self, deadline: float) -> None:
        """Reconnect and resume until :attr:`done`; back off a little between tries."""
        delay = 0.05
        while not self.done:
            if time.monotonic() > deadline:
                raise AssertionError(f"client still running at its deadline: {self.url}")
            try:
                await self.session()
                delay = 0.05
            except ConnectionClosed as exc:  # closed during the opening handshake
                self.closes.append(exc.rcvd.code if exc.rcvd is not None else 1006)
            except InvalidStatus as exc:  # 503 while a worker stops: try again
                self.refused.append(str(exc.response.status_code))
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.refused.append(type(exc).__name__)
            if not self.done:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
