"""The viewer's HTTP reads under gunicorn: lines before/after an offset, search, download.

A real gunicorn serves tests/apps/viewer_app.py; a plain HTTP client reads
what the page would. The scroll-back walk covers a file of many MB from its
end to byte 0; search results are compared with a line-by-line reference;
ranges of the download are compared byte for byte.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import ServerFactory
from helpers import http_get
from server import Server

pytestmark = pytest.mark.integration


def start(server: ServerFactory, files: dict[str, Path], **options: object) -> Server:
    return server("viewer_app:app", env={
        "PINE_VIEWER_FILES": json.dumps({k: str(v) for k, v in files.items()})},
        **options)


def request(srv: Server, path: str, headers: dict[str, str] | None = None,
            timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def big_log(path: Path, megabytes: int) -> bytes:
    lines = []
    size = 0
    i = 0
    while size < megabytes * 1024 * 1024:
        level = "ERROR" if i % 1009 == 0 else "INFO"
        line = f"{i:08d} {level} req {'é' * (i % 7)}{'x' * (i % 90)}\n"
        lines.append(line)
        size += len(line.encode())
        i += 1
    data = "".join(lines).encode()
    path.write_bytes(data)
    return data


def test_scroll_back_walks_a_big_file_to_byte_0_line_by_line(server: ServerFactory,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = big_log(log, 12)
    srv = start(server, {"app": log})
    ident = f"{log.stat().st_dev}:{log.stat().st_ino}"
    end = len(data)
    blocks = []
    while end > 0:
        status, headers, body = request(
            srv, f"/logs/app/before?offset={end}&file={ident}&bytes=1048576")
        assert status == 200, body
        start_at = int(headers["x-pine-start"])
        assert headers["x-pine-cut"] == "0" and headers["x-pine-file"] == ident
        assert start_at + len(body) == end and 0 < len(body) <= 1048576
        assert start_at == 0 or data[start_at - 1] == 0x0A  # a line start
        blocks.append(body)
        end = start_at
    assert b"".join(reversed(blocks)) == data  # no line lost or repeated at any seam

    # Forward from a line start, whole lines.
    status, headers, body = request(srv, f"/logs/app/after?offset=0&file={ident}&bytes=5000")
    assert status == 200 and data.startswith(body) and body.endswith(b"\n")


def test_another_file_at_the_path_is_a_409_and_bad_values_a_400(server: ServerFactory,
                                                              tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old\n")
    srv = start(server, {"app": log})
    ident = f"{log.stat().st_dev}:{log.stat().st_ino}"
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("new\n")
    status, _, body = request(srv, f"/logs/app/before?offset=4&file={ident}")
    assert (status, body) == (409, b"another file is at this path now (rotated)\n")
    for query in ("offset=-1", "offset=1e3", "", "offset=1&file=x", "offset=1&bytes=99999999"):
        status, _, _ = request(srv, f"/logs/app/before?{query}")
        assert status == 400, query
    assert http_get(srv.url + "/logs/nope/before?offset=1")[0] == 404


def test_download_is_an_attachment_and_ranges_are_byte_exact(server: ServerFactory,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = big_log(log, 3)
    srv = start(server, {"app": log})
    status, headers, body = request(srv, "/logs/app/download")
    assert status == 200 and body == data
    assert headers["content-disposition"] == "attachment; filename=app.log"
    assert headers["accept-ranges"] == "bytes"
    size = len(data)
    for spec, (lo, hi) in {"bytes=0-0": (0, 0), "bytes=100-199": (100, 199),
                           f"bytes={size - 10}-": (size - 10, size - 1),
                           "bytes=-7": (size - 7, size - 1),
                           f"bytes=1000000-{size + 50}": (1000000, size - 1)}.items():
        status, headers, body = request(srv, "/logs/app/download", {"Range": spec})
        assert status == 206, spec
        assert body == data[lo:hi + 1], spec
        assert headers["content-range"] == f"bytes {lo}-{hi}/{size}"
    status, headers, _ = request(srv, "/logs/app/download", {"Range": f"bytes={size + 5}-"})
    assert status == 416


def search(srv: Server, query: str) -> list[dict[str, object]]:
    status, headers, body = request(srv, "/logs/app/search?" + query, timeout=120)
    assert status == 200, body
    assert headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in body.splitlines()]


def test_search_finds_exactly_the_matching_lines(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = big_log(log, 8)
    srv = start(server, {"app": log})
    lines = data.split(b"\n")[:-1]
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)

    def expect(pred: object) -> list[tuple[int, str]]:
        return [(offsets[i], line.decode()) for i, line in enumerate(lines)
                if pred(line)]  # type: ignore[operator]

    records = search(srv, "q=ERROR&limit=100000&case=1")
    assert records[0] == {"file": f"{log.stat().st_dev}:{log.stat().st_ino}"}
    got = [(r["offset"], r["text"]) for r in records if "offset" in r]
    assert got == expect(lambda line: b"ERROR" in line)
    assert records[-1] == {"done": True, "scanned": len(data), "size": len(data),
                           "matches": len(got), "limited": False}

    records = search(srv, "q=error&limit=100000")  # case-insensitive by default
    assert [r["offset"] for r in records if "offset" in r] == [o for o, _ in got]

    records = search(srv, urllib.parse.urlencode({"q": r"^000\d{2}00 .*é{6}", "re": "1",
                                                  "case": "1", "limit": "100000"}))
    rx = re.compile(r"^000\d{2}00 .*é{6}".encode())
    assert [r["offset"] for r in records if "offset" in r] == [
        o for o, _ in expect(lambda line: rx.search(line) is not None)]

    status, _, body = request(srv, "/logs/app/search?q=(unclosed&re=1")
    assert status == 400 and body.startswith(b"not a regular expression")
    assert request(srv, "/logs/app/search?q=")[0] == 400


def test_matches_stream_as_found_and_a_departed_client_frees_the_thread(
        server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes((b"a" * 40 + b"!\n") * 20 + b"first match here\n")
    # One worker thread: a search that held it would stall every other request.
    srv = start(server, {"app": log}, threads=1)
    parts = urllib.parse.urlsplit(srv.url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    sock.sendall(b"GET /logs/app/search?q=(a%2B)%2B%24%7Cfirst&re=1 HTTP/1.1\r\n"
                 b"Host: x\r\n\r\n")
    head = b""
    while b'{"file"' not in head:  # the response has begun
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    sock.close()  # the client leaves while the child backtracks on the first line
    started = time.monotonic()
    status, _, _ = request(srv, "/__ready", timeout=60)
    assert status == 200
    # Well before the 10 s stall limit: the departure was seen, not waited out.
    assert time.monotonic() - started < 8
