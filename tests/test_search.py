"""The viewer's whole-file reads in-process, on real files: search, lines before and after.

:func:`flask_pine_ws.search.scan` is compared with a line-by-line reference
on files with every edge (no final newline, CRLF, lines longer than a
block, matches at block edges); the blocks of ``before``/``after`` are
walked from the end to byte 0 and must give the file back exactly;
:func:`~flask_pine_ws.search.stream_search` must not outlive its reader
(the autouse ``no_leaks`` fixture fails a test that leaves its child).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from flask_pine_ws.search import Query, scan, stream_search
from flask_pine_ws.viewer_files import _lines_after, _lines_before


def reference(data: bytes, query: Query) -> list[tuple[int, bytes]]:
    """(offset, line) of every matching line, one line at a time."""
    rx = query.compile()
    out = []
    offset = 0
    for line in data.split(b"\n"):
        if offset >= len(data) and not line:
            break
        if rx.search(line):
            out.append((offset, line))
        offset += len(line) + 1
    return out


def sample(tmp_path: Path, lines: list[bytes], end: bytes = b"\n") -> tuple[Path, bytes]:
    data = b"\n".join(lines) + end
    path = tmp_path / "app.log"
    path.write_bytes(data)
    return path, data


def found(path: Path, query: Query, **options: int) -> list[tuple[int, bytes]]:
    out = []
    records = list(scan(str(path), query, **options))
    assert records[-1]["done"] is True
    for r in records:
        if "offset" in r:
            assert isinstance(r["offset"], int)
            out.append((r["offset"], str(r["text"]).encode()))
    return out


LINES = [f"{i:05d} {'ERROR' if i % 97 == 0 else 'info'} café {'x' * (i % 300)} Error"
         .encode() for i in range(3000)]


@pytest.mark.parametrize("query", [
    Query("ERROR"), Query("error", ignore_case=True), Query("café x"),
    Query(r"^0\d{3}7 ", regex=True), Query(r"x{250,}", regex=True),
    Query("ERROR.*Error$", regex=True), Query("e", regex=True, ignore_case=True),
])
@pytest.mark.parametrize("block", [1000, 1 << 20])
def test_scan_finds_every_matching_line_once(tmp_path: Path, query: Query, block: int) -> None:
    path, data = sample(tmp_path, LINES)
    want = [(o, line[:2000]) for o, line in reference(data, query)]
    assert found(path, query, block=block, limit=100_000) == want


#: Every mix of cases of a literal, its rare byte (``k``) in both cases, near
#: misses, then lines so full of ``k`` that the rare byte proves common and the
#: search turns to a folded copy of each block, mid-file.
CASES = ([f"{i:04d} {word} tail".encode()
          for i, word in enumerate(["traceback", "TRACEBACK", "TraceBack", "tRACEBACk",
                                    "trace back", "tracebac", "raceback", "xtracebackx",
                                    "kkk", "KKK", "TRACEBACK traceback"] * 40)]
         + [b"k" * 200 + b" K" * 50 for _ in range(300)]
         + [f"{i:04d} {word}".encode() for i, word in enumerate(["TrAcEbAcK", "tracebacK",
                                                                  "no", "traceBACK"] * 40)])


@pytest.mark.parametrize("block", [1000, 1 << 20])
def test_a_literal_without_case_is_found_in_every_mix_of_cases(tmp_path: Path,
                                                               block: int) -> None:
    path, data = sample(tmp_path, CASES, end=b"")  # the last line unfinished: the file's end
    for query in (Query("traceback", ignore_case=True), Query("TraceBack", ignore_case=True),
                  Query("ACEB", ignore_case=True), Query("traceback")):
        want = reference(data, query)
        assert want and found(path, query, block=block, limit=100_000) == want, query


def test_a_literal_is_never_completed_by_bytes_of_an_earlier_block(tmp_path: Path) -> None:
    # The last, short block ends in the literal's first byte; the reused
    # buffer still holds the rest of it, from the block before, just after.
    path = tmp_path / "app.log"
    path.write_bytes(b"0" * 11 + b"abc" + b"0" * 985 + b"\n" + b"x" * 10 + b"#")
    for query in (Query("#abc"), Query("#ABC", ignore_case=True)):
        assert found(path, query, block=1000) == []
        assert found(path, Query(query.pattern[:1], ignore_case=query.ignore_case),
                     block=1000) == [(1000, b"x" * 10 + b"#")]


def test_a_search_streams_the_records_of_scan_as_json_lines(tmp_path: Path) -> None:
    lines = [b'say "hi" \\ back\tslash \x01 caf\xc3\xa9 \xff\xfe broken ERROR',
             b"\xe2\x82 ERROR cut in a character", b"ERROR " + b"\xc3\xa9" * 1500]
    path, _ = sample(tmp_path, lines * 3)
    query = Query("ERROR")
    want = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in scan(str(path), query)]
    assert b"".join(stream_search(str(path), query)) == b"".join(want)
    assert len(want) == 3 * 3 + 2


def test_scan_edges_no_final_newline_crlf_long_lines(tmp_path: Path) -> None:
    lines = [b"short ERROR\r", b"y" * 5000 + b"ERROR", b"", b"ERROR at the end, no newline"]
    path, data = sample(tmp_path, lines, end=b"")
    assert [o for o, _ in found(path, Query("ERROR"), block=1024)] == [
        o for o, _ in reference(data, Query("ERROR"))]
    # A matching line is sent cut to 2000 bytes, and says so.
    records = [r for r in scan(str(path), Query("ERROR")) if "offset" in r]
    assert [r["cut"] for r in records] == [False, True, False]
    assert records[1]["text"] == "y" * 2000
    # Longer than two blocks: searched in pieces, the match's piece sent, the
    # offset still the line's.
    records = [r for r in scan(str(path), Query("ERROR"), block=1024) if "offset" in r]
    assert [(r["offset"], r["cut"]) for r in records] == [(0, False), (13, True), (5020, False)]
    assert str(records[1]["text"]).endswith("yERROR")


def test_an_empty_file_and_one_that_ends_with_a_newline_end_the_scan(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert list(scan(str(empty), Query("x"))) == [
        {"done": True, "scanned": 0, "size": 0, "matches": 0, "limited": False}]
    path, _ = sample(tmp_path, [b"x"] * 3)
    records = list(scan(str(path), Query("x"), block=2))
    assert [r["offset"] for r in records if "offset" in r] == [0, 2, 4]
    assert records[-1]["scanned"] == 6


def test_scan_stops_at_the_limit_and_says_so(tmp_path: Path) -> None:
    path, _ = sample(tmp_path, LINES)
    records = list(scan(str(path), Query("info"), limit=10))
    assert sum("offset" in r for r in records) == 10
    assert records[-1]["limited"] is True and records[-1]["matches"] == 10


def test_lines_before_walk_back_to_byte_0_gives_the_file_exactly(tmp_path: Path) -> None:
    path, data = sample(tmp_path, [*LINES, b"z" * 9000, b"last"])
    fd = os.open(path, os.O_RDONLY)
    try:
        for want in (700, 4096, 65536):
            end = len(data)
            pieces = []
            while end > 0:
                block, start, cut = _lines_before(fd, end, want)
                assert start + len(block) == end and len(block) <= want
                if not cut:  # whole lines: starts at a line start
                    assert start == 0 or data[start - 1:start] == b"\n"
                pieces.append(block)
                end = start
            assert b"".join(reversed(pieces)) == data
            # and forward, from byte 0, whole lines only
            start, pieces = 0, []
            while start < len(data):
                block, at, cut = _lines_after(fd, start, want)
                assert at == start and block
                assert cut or block.endswith(b"\n")
                pieces.append(block)
                start += len(block)
            assert b"".join(pieces) == data
    finally:
        os.close(fd)


def test_lines_after_leaves_out_an_unfinished_line(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"one\ntwo\nthr")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _lines_after(fd, 0, 100) == (b"one\ntwo\n", 0, False)
        assert _lines_after(fd, 8, 100) == (b"", 8, False)
    finally:
        os.close(fd)


def records_of(chunks: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line) for line in b"".join(chunks).splitlines()]


def test_stream_search_relays_the_child_and_reaps_it(tmp_path: Path) -> None:
    path, data = sample(tmp_path, LINES)
    records = records_of(list(stream_search(str(path), Query("ERROR"))))
    assert [r["offset"] for r in records if "offset" in r] == [
        o for o, _ in reference(data, Query("ERROR"))]
    assert records[-1]["done"] is True


def test_a_catastrophic_pattern_is_stopped_and_said_too_slow(tmp_path: Path) -> None:
    path, _ = sample(tmp_path, [b"a" * 40 + b"!"] * 3)
    started = time.monotonic()
    records = records_of(list(stream_search(str(path), Query("(a+)+$", regex=True), stall=1.0)))
    assert records[-1] == {"error": "the pattern is too slow: stopped after 1 s without progress"}
    assert time.monotonic() - started < 30


def test_a_reader_that_leaves_takes_the_child_with_it(tmp_path: Path) -> None:
    path, _ = sample(tmp_path, [b"a" * 40 + b"!"] * 3)
    gone = [False]
    stream = stream_search(str(path), Query("(a+)+$", regex=True), stall=600,
                           departed=lambda: gone[0])
    started = time.monotonic()
    gone[0] = True  # the client hangs up while the child is silent
    assert list(stream) == []
    assert time.monotonic() - started < 10
    # Closed before its end: the child is killed at once.
    stream = stream_search(str(path), Query("a+", regex=True), stall=600)
    next(stream)
    stream.close()


def test_a_malformed_pattern_raises_before_any_process(tmp_path: Path) -> None:
    path, _ = sample(tmp_path, [b"x"])
    with pytest.raises(re.error):
        next(stream_search(str(path), Query("(unclosed", regex=True)))
