"""Giving memory back to the system after a peak: glibc's ``malloc_trim``.

glibc keeps freed memory for reuse: after a burst of large messages (many
clients sending up to ``PINE_WS_MAX_MESSAGE_SIZE`` at once, deflate bombs
inflated up to that limit) a worker's resident size stays at its peak, though
Python freed every object. ``malloc_trim(0)`` returns the free pages of every
arena. It costs a walk of the heap (a millisecond or so), so it runs only
when a connection that received a large message ends. Elsewhere than glibc
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_trim = _load()


def release() -> bool:
    """Return free heap memory to the system.

    :returns: whether a trim ran (``False`` without glibc).
    """
    if _trim is None:
        return False
    _trim(0)
    return True
