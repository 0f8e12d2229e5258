"""Which backend carries channels in this process: chosen by ``PINE_WS_MESSAGE_QUEUE``.

``None`` (the default) is the embedded backend: delivery within the process,
no dependency, no thread until a member has something to receive. A
``redis://`` or ``rediss://`` URL is the Redis backend (redis-py, the
``flask-pine-ws[redis]`` extra).

One backend per URL per process, made on first use. The table remembers the
process that made it: after a fork (gunicorn's workers, a job runner's
children) the child starts afresh, since the parent's threads and sockets do
not come along.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Protocol

from ..config import setting
from .local import LocalBackend, Registry
from .message import Payload

if TYPE_CHECKING:
    from .redis import RedisBackend

_SCHEMES = ("redis://", "rediss://")


class Backend(Protocol):
    """What carries a published message to the members (of this process, or of all)."""

    registry: Registry

    def publish(self, channel: str, payload: Payload) -> None: ...

    def joined(self, channel: str) -> None: ...


_lock = threading.Lock()
_pid = os.getpid()
_backends: dict[str | None, Backend] = {}


def check_url(url: object) -> str | None:
    """``url`` if it is a valid ``PINE_WS_MESSAGE_QUEUE`` value.

    :raises ValueError: it is neither ``None`` nor a Redis URL.
    """
    if url is None or url == "":
        return None
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise ValueError(f"PINE_WS_MESSAGE_QUEUE must be None or a redis:// or rediss:// "
                         f"URL, not {url!r}")
    return url


def backend_for(url: str | None) -> Backend:
    """The backend of this process for ``url`` (``None``: the embedded one)."""
    global _pid
    with _lock:
        if os.getpid() != _pid:  # a forked child: nothing of the parent's works here
            _backends.clear()
            _pid = os.getpid()
        backend = _backends.get(url)
        if backend is None:
            backend = LocalBackend() if url is None else _redis(url)
            _backends[url] = backend
        return backend


def current() -> Backend:
    """The backend the current app's ``PINE_WS_MESSAGE_QUEUE`` names."""
    return backend_for(check_url(setting("PINE_WS_MESSAGE_QUEUE")))


def existing() -> list[Backend]:
    """The backends made so far in this process (to take a closing connection out of all)."""
    with _lock:
        if os.getpid() != _pid:
            return []
        return list(_backends.values())


def _redis(url: str) -> RedisBackend:
    try:
        from .redis import RedisBackend  # lazily: redis-py is the optional [redis] extra
    except ImportError as exc:  # redis-py missing
        raise RuntimeError("PINE_WS_MESSAGE_QUEUE names Redis, but redis-py is not "
                           "installed: pip install 'flask-pine-ws[redis]'") from exc
    return RedisBackend(url)
