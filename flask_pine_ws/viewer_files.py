"""The viewer's reads of the whole file: lines before an offset, search, download.

This module owns the viewer's plain HTTP endpoints beside its socket, under
each file's page URL (``/logs/app`` -> ``/logs/app/before`` ...), so the page
reaches them by URLs relative to itself and a URL prefix works:

- ``before?offset=X&file=<dev>:<ino>&bytes=N``: the whole lines that end
  just before byte ``X``, at most ``N`` bytes (:data:`MAX_BEFORE`), starting
  at a line start. ``X-Pine-Start`` says where; ``X-Pine-Cut: 1`` that one
  line was longer than ``N`` and this is its last ``N`` bytes. Scrolling back
  asks for this, page by page, down to byte 0.
- ``after?offset=X&file=...&bytes=N``: the whole lines from byte ``X`` on
  (an unfinished last line left out): a search match opened in its context.
- ``search?q=...&re=1&case=1&limit=N``: :func:`~.search.stream_search` as
  newline-delimited JSON, streamed as found (``docs/viewer.md``).
- ``download``: the file as an attachment; ``Range`` honoured (Werkzeug's
  conditional responses).

Every request names a file by its name in the app's mapping and, where it
reads at an offset, by the id of the file the offset is in: a path that now
holds another file (rotated) answers 409, not bytes of the wrong file. Each
read is bounded by what is asked (a block, a search's output), never by the
file's size.
"""

from __future__ import annotations

import os
import re
import select
import socket
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

from flask import Blueprint, Response, request, send_file

from .follower import file_id
from .search import DEFAULT_LIMIT, MAX_LIMIT, Query, stream_search

#: Default and largest block a ``before`` request returns.
DEFAULT_BEFORE = 256 * 1024
MAX_BEFORE = 4 * 1024 * 1024
_UINT = re.compile(r"^[0-9]{1,19}$")
_FILE_ID = re.compile(r"^[0-9]{1,20}:[0-9]{1,20}$")
#: A pattern's length limit: a query string, not a document.
_MAX_PATTERN = 1000


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _uint(name: str, default: int | None, high: int | None = None) -> int:
    value = request.args.get(name)
    if value is None or value == "":
        if default is None:
            raise _Refused(400, f"{name} is required: a non-negative integer")
        return default
    if not _UINT.match(value):
        raise _Refused(400, f"{name} must be a non-negative integer")
    number = int(value)
    if high is not None and number > high:
        raise _Refused(400, f"{name} must be at most {high}")
    return number


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _open_regular(path: str, roots: list[str] | None) -> int:
    """An fd of the regular file at ``path`` (never blocking on a FIFO), inside ``roots``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Refused(404, "the file does not exist (yet)") from None
    except OSError as exc:
        raise _Refused(403, f"cannot read the file: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(409, "not a regular file")
        if roots is not None and not _inside(os.readlink(f"/proc/self/fd/{fd}"), roots):
            raise _Refused(403, "path outside the allowed watch roots")
    except BaseException:
        os.close(fd)
        raise
    return fd


def register_file_routes(bp: Blueprint, paths: Mapping[str, str], converter: str,
                         roots: Callable[[], list[str] | None]) -> None:
    """Add ``/<name>/before``, ``after``, ``search`` and ``download`` to ``bp``.

    :param converter: the file name's URL rule part, as the page's own
        (``<any("a","b"):file>``, or ``<file>`` for a live set whose names
        the blueprint checks before each request).
    :param roots: the allowed roots at request time (``None``: anywhere).
    """

    def block(file: str, direction: Literal["before", "after"]) -> Response:
        try:
            offset = _uint("offset", None)
            want = _uint("bytes", DEFAULT_BEFORE, MAX_BEFORE)
            ident = request.args.get("file", "")
            if ident and not _FILE_ID.match(ident):
                raise _Refused(400, "file must be a file id <dev>:<inode>")
            fd = _open_regular(paths[file], roots())
        except _Refused as exc:
            return _text(exc.status, str(exc))
        try:
            st = os.fstat(fd)
            if ident and file_id(st) != ident:
                return _text(409, "another file is at this path now (rotated)")
            if direction == "before":
                data, start, cut = _lines_before(fd, min(offset, st.st_size), want)
            else:
                data, start, cut = _lines_after(fd, min(offset, st.st_size), want)
        finally:
            os.close(fd)
        response = Response(data, mimetype="application/octet-stream")
        response.headers["X-Pine-Start"] = str(start)
        response.headers["X-Pine-End"] = str(start + len(data))
        response.headers["X-Pine-File"] = file_id(st)
        response.headers["X-Pine-Cut"] = "1" if cut else "0"
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.route(f"/{converter}/before")
    def before(file: str) -> Response:
        return block(file, "before")

    @bp.route(f"/{converter}/after")
    def after(file: str) -> Response:
        return block(file, "after")

    @bp.route(f"/{converter}/search")
    def search(file: str) -> Response:
        pattern = request.args.get("q", "")
        if not pattern or len(pattern) > _MAX_PATTERN or "\x00" in pattern:
            return _text(400, f"q must be 1 to {_MAX_PATTERN} characters")
        query = Query(pattern, regex=request.args.get("re") == "1",
                      ignore_case=request.args.get("case") != "1")
        try:
            limit = _uint("limit", DEFAULT_LIMIT, MAX_LIMIT)
            query.compile()
            fd = _open_regular(paths[file], roots())
        except _Refused as exc:
            return _text(exc.status, str(exc))
        except re.error as exc:
            return _text(400, f"not a regular expression: {exc}")
        try:
            ident = file_id(os.fstat(fd))
            body: Iterator[bytes] = _searching(fd, query, limit, ident,
                                               _departure_check(request.environ))
        except BaseException:
            os.close(fd)
            raise
        response = Response(body, mimetype="application/x-ndjson")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: relay as found
        response.headers["X-Pine-File"] = ident
        return response

    @bp.route(f"/{converter}/download")
    def download(file: str) -> Response:
        try:
            fd = _open_regular(paths[file], roots())
        except _Refused as exc:
            return _text(exc.status, str(exc))
        os.close(fd)  # checked: a regular file inside the roots
        response = send_file(paths[file], mimetype="text/plain", as_attachment=True,
                             download_name=os.path.basename(paths[file]),
                             conditional=True, max_age=0)
        response.headers["Cache-Control"] = "no-store"
        return response


def _lines_before(fd: int, end: int, want: int) -> tuple[bytes, int, bool]:
    """The whole lines that end at ``end`` (a line start), at most ``want`` bytes.

    ``(data, start, cut)``: ``cut`` when one line is longer than ``want`` and
    ``data`` is its last ``want`` bytes.
    """
    low = max(0, end - want)
    data = os.pread(fd, end - low, low)
    if low == 0:
        return data, 0, False
    nl = data.find(b"\n")
    if nl < 0 or nl + 1 == len(data):
        return data, low, True
    return data[nl + 1:], low + nl + 1, False


def _lines_after(fd: int, start: int, want: int) -> tuple[bytes, int, bool]:
    """The whole lines from ``start`` (a line start), at most ``want`` bytes; an
    unfinished last line is left out. ``cut``: one line longer than ``want``."""
    data = os.pread(fd, want, start)
    nl = data.rfind(b"\n")
    if nl < 0:
        return (data, start, True) if len(data) == want else (b"", start, False)
    return data[:nl + 1], start, False


def _departure_check(environ: Mapping[str, object]) -> Callable[[], bool] | None:
    """Whether the client of this request hung up, read from its socket without consuming.

    gunicorn and Werkzeug's server put the client's socket in the environ;
    an orderly close (or a reset) reads as end of stream.
    """
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        return None

    def departed() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return departed


def _searching(fd: int, query: Query, limit: int, ident: str,
               departed: Callable[[], bool] | None) -> Iterator[bytes]:
    # The child reads the file this fd is (by /proc, while the fd is open): a
    # rotation meanwhile cannot swap another file in under its offsets.
    try:
        yield (f'{{"file":"{ident}"}}\n').encode()
        yield from stream_search(f"/proc/{os.getpid()}/fd/{fd}", query, limit=limit,
                                 departed=departed)
    finally:
        os.close(fd)
