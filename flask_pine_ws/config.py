"""Settings: the per-route :class:`Config` and the app-wide ``PINE_WS_*`` keys.

This module owns every tunable of the extension and its default, in one place
(:data:`SETTINGS`: each key, its default, its meaning and the :class:`Config`
field that overrides it), so that the extension, the connection, the file
watcher and the docs read the same values. A route's :class:`Config`
overrides the app-wide defaults field by field: a field left at ``None``
takes the app's ``PINE_WS_*`` value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from flask import Flask, Request, current_app, has_app_context


@dataclass(frozen=True)
class Setting:
    """One ``PINE_WS_*`` key of ``app.config``: the one place it is declared.

    :ivar key: the ``app.config`` key.
    :ivar default: what ``init_app`` sets when the app has not set the key.
    :ivar doc: what the key means, in one line: the docs' settings table
        shows it as written.
    :ivar field: the :class:`Config` field that overrides the key for one
        route and falls back to it when left at ``None``; ``None``: the key
        is app-wide only.
    """

    key: str
    default: Any
    doc: str
    field: str | None = None


#: Every ``PINE_WS_*`` key the extension reads, in the order the docs list
#: them. ``DEFAULTS``, :meth:`Config.resolve`'s fallback, the docs' settings
#: table and :class:`~flask_pine_ws.FlaskPineWS`'s list of keys are all made
#: from it, so adding a key here is the whole of declaring it.
SETTINGS: tuple[Setting, ...] = (
    Setting("PINE_WS_ALLOWED_ORIGINS", [],
            "Origins accepted besides the request's own host (exact, or fnmatch patterns "
            "such as \"https://*.example.com\"); \"*\" accepts every origin.",
            field="allowed_origins"),
    Setting("PINE_WS_SUBPROTOCOLS", [],
            "Subprotocols the server may choose from, in order of preference.",
            field="subprotocols"),
    Setting("PINE_WS_ENABLE_COMPRESSION", True,
            "permessage-deflate, on as in Pine (gorilla's EnableCompression).",
            field="enable_compression"),
    Setting("PINE_WS_DEFLATE_CHOICE", "auto",
            "Under permessage-deflate, which messages are compressed: \"auto\" each "
            "one whose compressing gets it to the client sooner (zlib's measured rate "
            "against the link's, from TCP_INFO: a slow link compresses, loopback does "
            "not), \"always\" or \"never\" (every message plain, RSV1 clear)."),
    Setting("PINE_WS_MAX_MESSAGE_SIZE", 1024 * 1024,
            "Largest inbound message in bytes; a larger one closes with 1009.",
            field="max_message_size"),
    Setting("PINE_WS_PING_INTERVAL", 25.0,
            "Seconds between pings; a peer that misses a pong is dropped. 0: off. "
            "25 s keeps a connection alive behind nginx's 60 s proxy_read_timeout.",
            field="ping_interval"),
    Setting("PINE_WS_PONG_TIMEOUT", 20.0,
            "Seconds a ping may stay unanswered before the peer is dropped (1008). "
            "Apart from the ping interval: a deadline of one interval would drop a "
            "client that reads slowly (its pongs queue behind large messages), or "
            "any client with a short interval."),
    Setting("PINE_WS_SEND_TIMEOUT", 60.0,
            "Seconds a send may wait for a peer that does not read before the "
            "connection is dropped (the file is the buffer, never the process)."),
    Setting("PINE_WS_CLOSE_TIMEOUT", 2.0,
            "Seconds to wait for the peer's reply to our close frame."),
    Setting("PINE_WS_MAX_QUEUED_MESSAGES", 64,
            "Messages from the client queued until the handler receives them; past "
            "this many, the server stops reading the socket (TCP pushes back on the "
            "client) until the handler catches up. 0: no bound."),
    Setting("PINE_WS_MAX_QUEUED_BYTES", 1024 * 1024,
            "Bytes (characters of text) of queued messages past which the server "
            "stops reading the socket, as above; one message may pass it. 0: no bound."),
    Setting("PINE_WS_READ_BUFFER_SIZE", 4096,
            "Bytes read from the socket at a time.",
            field="read_buffer_size"),
    Setting("PINE_WS_BACKLOG_BYTES", 5 * 1024 * 1024,
            "watch_file: the first window sent when no start is given (Pine's 5 MB)."),
    Setting("PINE_WS_CHUNK_BYTES", 64 * 1024,
            "watch_file: the largest message it sends."),
    Setting("PINE_WS_POLLING", "auto",
            "watch_file: \"auto\" (inotify, polling where refused), True (always "
            "poll, for NFS, CIFS and some Docker volumes) or False (never poll)."),
    Setting("PINE_WS_POLL_INTERVAL", 1.0,
            "watch_file: seconds between stats when polling."),
    Setting("PINE_WS_SAFETY_INTERVAL", 30.0,
            "watch_file: seconds between the safety checks that recover from "
            "events the kernel dropped (inotify queue overflow)."),
    Setting("PINE_WS_WATCH_ROOTS", None,
            "watch_file: directories a watched path must resolve into (None: any)."),
    Setting("PINE_WS_BROADCAST", True,
            "watch_file: watchers caught up with a file share one reader thread and "
            "one frame per append (the file's feed); False: each reads for itself."),
    Setting("PINE_WS_MESSAGE_QUEUE", None,
            "Channels: None delivers within the process (no dependency); a "
            "redis:// or rediss:// URL shares channels with every process and host "
            "using that Redis (the flask-pine-ws[redis] extra)."),
    Setting("PINE_WS_CHANNEL_QUEUE", 4 * 1024 * 1024,
            "Channels: bytes of messages one member may have waiting (each counts "
            "its length and 64); past it the member is closed with 1013, so a client "
            "that stops reading never holds the worker's memory or the publisher."),
    Setting("PINE_WS_MAX_PER_ADDRESS", 0,
            "Open WebSockets per client address (request.remote_addr: the proxy's "
            "forwarded address under ProxyFix) in one worker; past it the handshake "
            "gets 429. 0: no cap (behind a proxy without ProxyFix, every client has "
            "the proxy's address)."),
)

#: Each key with its default. ``init_app`` sets each with
#: ``app.config.setdefault``; :func:`setting` falls back to it.
DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS}

#: Each :class:`Config` field backed by a key, with that key.
ROUTE_KEYS: dict[str, str] = {s.field: s.key for s in SETTINGS if s.field is not None}

#: A ``check_origin`` callable: ``(origin, request) -> bool``.
OriginCheck = Callable[[str, Request], bool]


@dataclass(frozen=True)
class Config:
    """Per-route settings, as Pine's ``websocket.Config``.

    Every field left at ``None`` takes the app-wide ``PINE_WS_*`` default.

    :param check_origin: ``None`` or ``True``: the browser's ``Origin`` must
        name the request's own host (or one of ``allowed_origins``); a request
        without ``Origin`` (a non-browser client) is allowed. ``False``: every
        origin is accepted (the cross-site WebSocket hijacking risk Pine's
        early default had). A callable ``(origin, request) -> bool`` decides
        instead.
    :param allowed_origins: origins accepted besides the own host: exact
        (``"https://app.example.com"``) or fnmatch patterns; ``"*"`` for all.
    :param subprotocols: subprotocols the server may choose, by preference.
    :param enable_compression: negotiate permessage-deflate.
    :param max_message_size: the largest inbound message, in bytes; a larger
        one closes the connection with 1009. ``0``: no limit.
    :param ping_interval: seconds between pings; ``0`` turns pings off.
    :param error: called with the exception when the handler raises; the
        client then gets close code 1011.
    :param read_buffer_size: bytes read from the socket at a time.
    """

    check_origin: bool | OriginCheck | None = None
    allowed_origins: Sequence[str] | None = None
    subprotocols: Sequence[str] | None = None
    enable_compression: bool | None = None
    max_message_size: int | None = None
    ping_interval: float | None = None
    error: Callable[[BaseException], Any] | None = None
    read_buffer_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.allowed_origins, str):
            raise TypeError("allowed_origins must be a list of origins, not a str")
        if isinstance(self.subprotocols, str):
            raise TypeError("subprotocols must be a list of names, not a str")
        for name in ("max_message_size", "read_buffer_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.ping_interval is not None and self.ping_interval < 0:
            raise ValueError(f"ping_interval must be >= 0, got {self.ping_interval!r}")
        if self.error is not None and not callable(self.error):
            raise TypeError("error must be callable")

    def resolve(self, app: Flask) -> Config:
        """Return a copy with every ``None`` field filled from ``app.config``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, key in ROUTE_KEYS.items():
            if values[name] is None:
                values[name] = app.config.get(key, DEFAULTS[key])
        return Config(**values)


def setting(key: str) -> Any:
    """Return the app-wide value of ``key`` (a ``PINE_WS_*`` name).

    Read from the current app when there is one, else the default, so that
    code running outside a request (a test, a script) still works.
    """
    if key not in DEFAULTS:
        raise KeyError(f"unknown setting {key!r}")
    if has_app_context():
        return current_app.config.get(key, DEFAULTS[key])
    return DEFAULTS[key]
