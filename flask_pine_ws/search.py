"""Search a whole file for a text or a regular expression, in large blocks, bounded in memory.

This module owns the viewer's search: :func:`scan` reads the file in blocks of
:data:`BLOCK` bytes and yields every matching line (its byte offset,
its text cut to :data:`SHOWN_BYTES`), with a progress record after
each block, so memory is bounded by a block and the cost by the bytes read.
A literal is found by its rarest byte (``memchr``; in both its cases when
case is ignored) and checked, as ``grep`` does; a regular expression with
:mod:`re` on bytes, ``MULTILINE`` so ``^``/``$`` are line ends. Case
folding is ASCII, on bytes.

:func:`stream_search` scans for a literal on the calling thread (it cannot
backtrack), and runs a regular expression's :func:`scan` in a child process
(this file as a script) and relays its records: a regular expression that
backtracks without end (``(a+)+$``) cannot be interrupted inside :mod:`re`,
but a process can be killed. It is killed when its client leaves (the HTTP
write fails, the generator is closed), when no record came for
:data:`STALL_SECONDS` (the pattern is too slow), and always at the end: a
search never holds a worker thread or a process past its client.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Bytes read at a time: large, so the per-call cost vanishes against the
#: scan, yet within the CPU's cache, so the search reads what the copy from
#: the page cache just wrote (8 MiB blocks were half as fast here).
BLOCK = 1024 * 1024
#: Bytes of a matching line sent back (the rest is fetched when the line is opened).
SHOWN_BYTES = 2000
#: Matches sent at most by default, and the most a client may ask for.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
#: A child that sends nothing for this long is stuck in its pattern: killed.
STALL_SECONDS = 10.0
#: How often the child hands its records to the parent (and so shows it is alive).
FLUSH_SECONDS = 0.1
#: How often a silent child's client is checked for having left.
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Query:
    """What to look for: ``pattern`` as text or a regular expression, with or without case."""

    pattern: str
    regex: bool = False
    ignore_case: bool = False

    def compile(self) -> re.Pattern[bytes]:
        """The pattern on bytes; :class:`re.error` for a malformed regular expression."""
        raw = self.pattern.encode("utf-8", "surrogateescape")
        source = raw if self.regex else re.escape(raw)
        return re.compile(source, re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0))


#: Bytes common in log text, most common first: a literal is looked for by
#: its rarest byte (``bytes.find`` of one byte is ``memchr``, many GB/s), and
#: each hit checked, as grep and ripgrep do.
_COMMON = (b" e0ta1o2in3s4r5l6h7d8c9u:.-/mp=g_fyw,b\nEAIT[]SRNOLDCGPvk\"'()xHMUFBW{}|"
           b"zqjKVXYJQZ")


class _Literal:
    """Find a literal in blocks by its rarest byte; plain ``find`` once that byte proves common.

    Without case, the rare byte is looked for in both its cases (two
    ``memchr`` scans, each hit's next position kept for the block) and each
    hit's window compared folded: no folded copy of the block, which costs
    more than the search (``re.IGNORECASE`` on a literal is slower still). A
    rare byte that proves common falls back to a folded copy of each block.
    """

    def __init__(self, needle: bytes, ignore_case: bool = False) -> None:
        self.needle = needle.lower() if ignore_case else needle
        self.ignore_case = ignore_case
        folded = self.needle

        def rank(b: int) -> int:
            # How common: the commoner of its cases, when case is ignored.
            cases = {bytes([b]), bytes([b]).upper()} if ignore_case else {bytes([b])}
            return min(_COMMON.find(c) if c in _COMMON else 1000 for c in cases)

        ranks = [(rank(b), -i) for i, b in enumerate(folded)]
        best = max(range(len(folded)), key=lambda i: ranks[i]) if folded else 0
        self.at = best
        self.rare = folded[best:best + 1]
        self.rares = sorted({self.rare, self.rare.upper()}) if ignore_case else [self.rare]
        self.next = [-2] * len(self.rares)  # per case: next hit in this block (-1 none, -2 unknown)
        self.misses = 0
        self.scanned = 0
        self.plain = not self.rare  # this block: plain ``find`` (in a folded copy without case)

    def block(self, buf: bytearray, cut: int) -> bytes | bytearray:
        """What :meth:`find` searches in for the block ``buf[:cut]``: ``buf`` or its folded copy.

        Whether the rare byte is rare is decided here, per block: a block is
        searched one way throughout.
        """
        self.next = [-2] * len(self.rares)
        self.plain = not self.rare or self.misses * 512 > self.scanned + 65536
        if self.ignore_case and self.plain:
            return buf[:cut].lower()
        return buf

    def _hit(self, hay: bytes | bytearray, pos: int, end: int) -> int:
        """The first position of the rare byte (either case) at or after ``pos``."""
        rares, nxt = self.rares, self.next
        best = -1
        for k, rare in enumerate(rares):
            hit = nxt[k]
            if hit == -2 or 0 <= hit < pos:
                hit = nxt[k] = hay.find(rare, pos, end)
            if hit >= 0 and (best < 0 or hit < best):
                best = hit
        return best

    def find(self, hay: bytes | bytearray, start: int, end: int) -> int:
        needle, at = self.needle, self.at
        if self.plain:
            return hay.find(needle, start, end)  # the rare byte is not rare here
        fold, rare = self.ignore_case, self.rares[0]
        size = len(needle)
        pos = start + at
        while True:
            hit = self._hit(hay, pos, end) if fold else hay.find(rare, pos, end)
            if hit < 0:
                self.scanned += end - start
                return -1
            if (hay[hit - at:hit - at + size].lower() == needle if fold
                    else hay.startswith(needle, hit - at, end)):
                if not fold or hit - at + size <= end:
                    self.scanned += hit - start
                    return hit - at
            self.misses += 1
            pos = hit + 1


#: One encoder for every record: ``json.dumps`` with a keyword builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False)


def _encode(record: dict[str, object]) -> bytes:
    """One record as a JSON line: a match's and a progress record's (the many) spelled directly.

    The same text as ``json.dumps(record, ensure_ascii=False)``, at a fifth of its cost.
    """
    if len(record) == 3 and "offset" in record:
        text = record["text"]
        if isinstance(text, str):
            return (f'{{"offset": {record["offset"]:d}, "text": {_JSON.encode(text)}, '
                    f'"cut": {"true" if record["cut"] else "false"}}}\n').encode()
    if len(record) == 2 and "progress" in record:  # one a block: the encoder's set-up shows
        return f'{{"progress": {record["progress"]:d}, "size": {record["size"]:d}}}\n'.encode()
    return (_JSON.encode(record) + "\n").encode()


def scan(path: str, query: Query, *, limit: int = DEFAULT_LIMIT,
         block: int = BLOCK) -> Iterator[dict[str, object]]:
    """Yield ``{"offset", "text", "cut"}`` per matching line, ``{"progress"}`` per block.

    The file is read up to its size at the start (what is appended meanwhile
    arrives in the live stream) into one reused buffer (no allocation per
    block); the last record is ``{"done": True, ...}``. A line longer than
    two blocks is searched in pieces (a match across a piece's edge is
    missed; the offset is still its line's).
    """
    rx = query.compile()
    literal = None if query.regex else query.pattern.encode("utf-8", "surrogateescape")
    finder = _Literal(literal, query.ignore_case) if literal is not None else None
    found = 0
    buf = bytearray(3 * block)  # a carried line of up to 2 blocks, then a block read
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        base = 0  # offset of buf[0] in the file
        kept = 0  # bytes carried over at the front of buf
        pos = 0  # bytes read from the file
        long_start: int | None = None  # start of a line that began in an earlier piece
        while True:
            got = f.readinto(view[kept:kept + min(block, size - pos)]) if pos < size else 0
            pos += got or 0
            n = kept + (got or 0)
            at_end = pos >= size or not got
            if at_end and n == 0:
                break  # an empty file, or nothing left after the last line
            cut = n if at_end else buf.rfind(b"\n", 0, n) + 1
            if cut == 0:
                if n < 2 * block:
                    kept = n
                    continue
                cut = n  # one line longer than two blocks: search it in pieces
            hay = buf if finder is None else finder.block(buf, cut)
            i = 0
            while found < limit and i < cut:
                if finder is not None:
                    at = finder.find(hay, i, cut)
                else:
                    m = rx.search(buf, i, cut)
                    at = -1 if m is None else m.start()
                if at < 0 or at >= cut:
                    break
                start = buf.rfind(b"\n", 0, at) + 1
                end = buf.find(b"\n", at, cut)
                end = cut if end < 0 else end
                found += 1
                line_at = long_start if start == 0 and long_start is not None else base + start
                shown = min(end, start + SHOWN_BYTES)
                # Decoded from the buffer itself: no copy of the line first.
                yield {"offset": line_at, "text": str(view[start:shown], "utf-8", "replace"),
                       "cut": end > shown or line_at != base + start}
                i = end + 1
            if buf[cut - 1:cut] == b"\n":
                long_start = None
            elif long_start is None or buf.find(b"\n", 0, cut) >= 0:
                long_start = base + buf.rfind(b"\n", 0, cut) + 1
            # The unfinished line goes to the front for the next block.
            kept = n - cut
            if kept:
                buf[:kept] = view[cut:n]
            base += cut
            yield {"progress": base, "size": size}
            if found >= limit or (at_end and not kept):
                break
    view.release()
    yield {"done": True, "scanned": base, "size": size, "matches": found,
           "limited": found >= limit}


def _main(argv: list[str]) -> int:
    """``python search.py PATH QUERY_JSON``: :func:`scan`'s records as JSON lines."""
    path, spec = argv
    options = json.loads(spec)
    query = Query(options["pattern"], options["regex"], options["ignore_case"])
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)  # noqa: SIM115
    flushed = time.monotonic()
    for record in scan(path, query, limit=options["limit"]):
        out.write(_encode(record))
        # Every FLUSH_SECONDS: the parent relays what was found and sees the
        # child alive, without waking for each block (it shares the cores).
        if "progress" in record and time.monotonic() - flushed >= FLUSH_SECONDS:
            out.flush()
            flushed = time.monotonic()
    out.flush()
    return 0


def stream_search(path: str, query: Query, *, limit: int = DEFAULT_LIMIT,
                  stall: float = STALL_SECONDS,
                  departed: Callable[[], bool] | None = None) -> Iterator[bytes]:
    """:func:`scan` as JSON lines: a literal here, a regular expression in a child process.

    The child dies with this generator: closing it (the HTTP client left:
    the server's write failed) kills the child at once. While the child is silent, ``departed()`` is
    asked every :data:`POLL_SECONDS` (the client hung up: stop without
    waiting for a write to fail); a child silent for ``stall`` seconds is
    killed, and an ``{"error": ...}`` record says why.
    """
    query.compile()  # a malformed pattern is the caller's error, before any process
    if not query.regex:
        # A literal cannot backtrack: no process to kill, scanned here.
        yield from _in_thread(path, query, limit, departed)
        return
    spec = json.dumps({"pattern": query.pattern, "regex": query.regex,
                       "ignore_case": query.ignore_case, "limit": limit})
    # This file as a script, isolated and without site: it needs only the
    # standard library, and starts in tens of milliseconds.
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), path, spec],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while True:
            silent = 0.0
            while not sel.select(min(POLL_SECONDS, stall)):
                silent += POLL_SECONDS
                if departed is not None and departed():
                    return
                if silent >= stall:
                    yield (json.dumps({"error": f"the pattern is too slow: stopped after "
                                                f"{stall:g} s without progress"}) + "\n").encode()
                    return
            data = os.read(fd, 1 << 20)
            if not data:
                break
            yield data
        if proc.wait() != 0:
            yield (json.dumps({"error": "the search failed"}) + "\n").encode()
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()


def _in_thread(path: str, query: Query, limit: int,
               departed: Callable[[], bool] | None) -> Iterator[bytes]:
    """:func:`scan` on this thread, its records handed over every :data:`FLUSH_SECONDS`.

    Each hand-over is a write to the client, which fails once it has left
    (and ``departed()`` is asked too): the scan stops between two blocks.
    """
    out: list[bytes] = []
    handed = time.monotonic()
    for record in scan(path, query, limit=limit):
        out.append(_encode(record))
        if "progress" in record and time.monotonic() - handed >= FLUSH_SECONDS:
            if departed is not None and departed():
                return
            yield b"".join(out)
            out.clear()
            handed = time.monotonic()
    yield b"".join(out)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
