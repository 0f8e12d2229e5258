"""FileFollower on real files: start positions, tail -F rotations, UTF-8-safe chunks, big files.

No server here: the follower is driven directly, on files in ``tmp_path``,
the way a watcher drives it (``start`` once, ``read`` after each change).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flask_pine_ws.follower import (
    Chunk,
    FileFollower,
    Item,
    Opened,
    PathRefused,
    Rotated,
    Waiting,
    utf8_safe_cut,
)


def file_id(st: os.stat_result) -> str:
    """How a resuming client names a file: ``"<dev>:<ino>"``."""
    return f"{st.st_dev}:{st.st_ino}"


def drain(f: FileFollower) -> list[Item]:
    return list(f.read())


def text_of(items: list[Item]) -> str:
    return "".join(i.data for i in items if isinstance(i, Chunk))  # type: ignore[misc]


def bytes_of(items: list[Item]) -> bytes:
    return b"".join(i.data for i in items if isinstance(i, Chunk))  # type: ignore[misc]


def notices(items: list[Item]) -> list[str]:
    return [i.how if isinstance(i, Rotated) else "waiting" for i in items
            if not isinstance(i, Chunk)]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "app.log"


# -- start positions ---------------------------------------------------------

def test_default_start_sends_small_file_whole(log: Path) -> None:
    log.write_text("one\ntwo\n")
    f = FileFollower(str(log), backlog_bytes=100)
    opened = f.start()
    assert (opened.offset, opened.size, opened.reset) == (0, 8, None)
    assert opened.file_id == file_id(log.stat())
    assert text_of(drain(f)) == "one\ntwo\n"
    f.close()


def test_default_start_of_big_file_is_last_window_from_a_line_start(log: Path) -> None:
    lines = [f"line {i:04d}\n" for i in range(1000)]  # 10 bytes each
    log.write_text("".join(lines))
    f = FileFollower(str(log), backlog_bytes=95)
    opened = f.start()
    # window = last 95 bytes starts mid-line; the first line break in it ends that line
    assert opened.offset == 10000 - 90
    assert text_of(drain(f)) == "".join(lines[-9:])
    f.close()


def test_default_start_without_line_break_in_window(log: Path) -> None:
    log.write_bytes(b"x" * 1000)
    f = FileFollower(str(log), backlog_bytes=100)
    assert f.start().offset == 900
    f.close()


@pytest.mark.parametrize("content", [
    b"", b"\n", b"a", b"a\n", b"a\nb", b"a\nb\n", b"\n\n\n", b"a\n\nb\n\n",
    b"".join(b"line %d\n" % i for i in range(300)),
    b"".join(b"line %d\n" % i for i in range(300)) + b"partial",
])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 299, 300, 1000])
def test_lines_matches_gnu_tail(log: Path, content: bytes, n: int) -> None:
    log.write_bytes(content)
    expected = subprocess.run(["tail", "-n", str(n), str(log)], capture_output=True,
                              check=True, timeout=10).stdout
    f = FileFollower(str(log), binary=True)
    opened = f.start(lines=n)
    assert content[opened.offset:] == expected
    f.close()


def test_lines_scans_blocks_backwards_capped_by_backlog(log: Path) -> None:
    # 300 000 lines: tail -n 3 must not need to read them; the cap bounds a huge N.
    log.write_bytes(b"".join(b"%07d\n" % i for i in range(300_000)))
    f = FileFollower(str(log), binary=True, backlog_bytes=1000)
    opened = f.start(lines=3)
    assert opened.offset == 300_000 * 8 - 24
    f.close()
    f = FileFollower(str(log), binary=True, backlog_bytes=1000)
    opened = f.start(lines=10_000)  # more lines than the window holds: the window's lines
    assert opened.offset == 300_000 * 8 - 1000
    f.close()


def test_lines_zero_sends_only_what_is_appended(log: Path) -> None:
    log.write_text("old\n")
    f = FileFollower(str(log))
    assert f.start(lines=0).offset == 4
    assert drain(f) == []
    with log.open("a") as out:
        out.write("new\n")
    assert text_of(drain(f)) == "new\n"
    f.close()


def test_offset_resumes_exactly_and_past_end_restarts(log: Path) -> None:
    log.write_text("0123456789")
    f = FileFollower(str(log))
    opened = f.start(offset=4)
    assert (opened.offset, opened.reset) == (4, None)
    assert text_of(drain(f)) == "456789"
    f.close()
    f = FileFollower(str(log))
    opened = f.start(offset=10)
    assert (opened.offset, opened.reset) == (10, None)
    assert drain(f) == []
    f.close()
    f = FileFollower(str(log))
    opened = f.start(offset=11)
    assert (opened.offset, opened.reset) == (0, "truncated")
    assert text_of(drain(f)) == "0123456789"
    f.close()


def test_file_id_of_another_file_restarts_at_zero(log: Path) -> None:
    log.write_text("abc")
    fid = file_id(log.stat())
    f = FileFollower(str(log))
    assert f.start(offset=1, file_id=fid) == Opened(fid, 1, 3, None)
    f.close()
    f = FileFollower(str(log))
    opened = f.start(offset=1, file_id="1:2")
    assert (opened.offset, opened.reset, opened.file_id) == (0, "replaced", fid)
    assert text_of(drain(f)) == "abc"
    f.close()


# -- following by name -------------------------------------------------------

def test_missing_file_waits_then_is_read_from_zero(log: Path) -> None:
    f = FileFollower(str(log))
    opened = f.start(lines=0)
    assert opened.file_id is None
    assert notices(drain(f)) == ["waiting"]
    assert drain(f) == []  # told once per missing period
    log.write_text("born\n")
    items = drain(f)
    assert notices(items) == ["replaced"]
    assert isinstance(items[0], Rotated) and items[0].file_id == file_id(log.stat())
    assert text_of(items) == "born\n"
    f.close()


def test_missing_directory_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "app.log"
    f = FileFollower(str(path))
    f.start()
    assert notices(drain(f)) == ["waiting"]
    path.parent.mkdir(parents=True)
    assert drain(f) == []
    path.write_text("hi\n")
    assert text_of(drain(f)) == "hi\n"
    f.close()


def test_rename_rotation_drains_old_then_reads_new(log: Path) -> None:
    log.write_text("a1\n")
    f = FileFollower(str(log))
    f.start()
    assert text_of(drain(f)) == "a1\n"
    with log.open("a") as old:
        old.write("a2\n")
        old.flush()
        log.rename(log.with_suffix(".1"))
        # nothing at the path yet: the old file is still followed
        old.write("a3\n")
        old.flush()
        assert text_of(drain(f)) == "a2\na3\n"
        old.write("a4\n")  # written after rotation, before the new file is seen
    log.write_text("b1\n")
    items = drain(f)
    assert text_of(items) == "a4\nb1\n"
    assert notices(items) == ["renamed"]
    assert text_of(items[:1]) == "a4\n" and isinstance(items[1], Rotated)
    f.close()


def test_remove_and_recreate(log: Path) -> None:
    log.write_text("a1\n")
    f = FileFollower(str(log))
    f.start()
    with log.open("a") as old:
        old.write("a2\n")
    log.unlink()
    items = drain(f)
    assert text_of(items) == "a1\na2\n"
    assert notices(items) == ["waiting"]
    assert f.position is None  # the deleted file's descriptor is released
    log.write_text("b1\n")
    items = drain(f)
    assert notices(items) == ["removed"] and text_of(items) == "b1\n"
    f.close()


def test_replaced_by_another_file_at_once(log: Path, tmp_path: Path) -> None:
    log.write_text("old\n")
    f = FileFollower(str(log))
    f.start()
    assert text_of(drain(f)) == "old\n"
    other = tmp_path / "new.tmp"
    other.write_text("new\n")
    other.replace(log)  # atomic replace: the old file is unlinked
    items = drain(f)
    assert notices(items) == ["removed"] and text_of(items) == "new\n"
    f.close()


def test_copytruncate(log: Path) -> None:
    log.write_text("a1\na2\n")
    f = FileFollower(str(log))
    f.start()
    assert text_of(drain(f)) == "a1\na2\n"
    shutil.copy(log, log.with_suffix(".1"))
    with log.open("r+") as out:
        out.truncate(0)
    with log.open("a") as out:
        out.write("b1\n")
    items = drain(f)
    assert notices(items) == ["truncated"] and text_of(items) == "b1\n"
    f.close()


def test_rewrite_with_shorter_content(log: Path) -> None:
    log.write_text("a long first version\n")
    f = FileFollower(str(log))
    f.start()
    drain(f)
    log.write_text("short\n")  # open(..., "w"): truncate, then write
    items = drain(f)
    assert notices(items) == ["truncated"] and text_of(items) == "short\n"
    assert f.delivered == 6
    f.close()


def test_truncated_and_rewritten_past_the_offset_before_a_look(log: Path) -> None:
    log.write_text("first\n")
    f = FileFollower(str(log))
    f.start()
    assert text_of(drain(f)) == "first\n"
    log.write_text("a longer second version\n")  # size alone says "appended"
    items = drain(f)
    assert notices(items) == ["truncated"] and text_of(items) == "a longer second version\n"
    f.close()
    f = FileFollower(str(log))  # a resuming client whose offset now lies in other content
    f.start(offset=6)
    log.write_text("rewritten while the client was away\n")
    items = drain(f)
    assert notices(items) == ["truncated"]
    assert text_of(items) == "rewritten while the client was away\n"
    f.close()


def test_directory_removed_and_created_again(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    path = d / "app.log"
    path.write_text("a1\n")
    f = FileFollower(str(path))
    f.start()
    assert text_of(drain(f)) == "a1\n"
    shutil.rmtree(d)
    assert notices(drain(f)) == ["waiting"]
    d.mkdir()
    assert drain(f) == []
    path.write_text("b1\n")
    items = drain(f)
    assert notices(items) == ["removed"] and text_of(items) == "b1\n"
    f.close()


# -- UTF-8 and chunks --------------------------------------------------------

SAMPLE = "héllo wörld ß € 𝄞 日本語 ✓\n" * 3


def test_utf8_written_one_byte_at_a_time_is_never_split(log: Path) -> None:
    log.write_bytes(b"")
    f = FileFollower(str(log))
    f.start()
    got = []
    with log.open("ab", buffering=0) as out:
        for byte in SAMPLE.encode():
            out.write(bytes([byte]))
            for item in drain(f):
                assert isinstance(item, Chunk)
                assert "\ufffd" not in item.data
                assert item.nbytes == len(item.data.encode())  # type: ignore[union-attr]
                got.append(item.data)
    assert "".join(got) == SAMPLE  # type: ignore[arg-type]
    assert f.delivered == len(SAMPLE.encode())
    f.close()


def test_invalid_bytes_replaced_in_text_exact_in_binary(log: Path) -> None:
    raw = b"ok \xff\xfe bad \xe2\x82 cut \xc3\x28 end \xf0\x9f\x98"
    log.write_bytes(raw)
    f = FileFollower(str(log))
    f.start()
    items = drain(f)
    assert text_of(items) == raw[:-3].decode("utf-8", errors="replace")
    assert f.delivered == len(raw) - 3  # the incomplete final sequence waits for its end
    with log.open("ab") as out:
        out.write(b"\x80")  # completes U+1F600
    assert text_of(drain(f)) == "😀"
    f.close()
    fb = FileFollower(str(log), binary=True)
    fb.start()
    assert bytes_of(drain(fb)) == raw + b"\x80"
    fb.close()


def test_incomplete_sequence_at_truncation_is_flushed_as_replacement(log: Path) -> None:
    log.write_bytes(b"abc\xe2\x82")
    f = FileFollower(str(log))
    f.start()
    assert text_of(drain(f)) == "abc"
    log.write_bytes(b"x")
    items = drain(f)
    assert text_of(items) == "\ufffdx" and notices(items) == ["truncated"]
    f.close()


@pytest.mark.parametrize("binary", [False, True])
def test_chunks_are_bounded_and_never_split_sequences(log: Path, binary: bool) -> None:
    content = ("€" * 1000 + "a").encode() * 50  # 3-byte chars across every boundary
    log.write_bytes(content)
    f = FileFollower(str(log), binary=binary, chunk_bytes=1000)
    f.start()
    items = drain(f)
    assert all(isinstance(i, Chunk) and 0 < i.nbytes <= 1000 for i in items)
    if binary:
        assert bytes_of(items) == content
    else:
        for i in items:
            assert isinstance(i.data, str) and len(i.data.encode()) == i.nbytes  # type: ignore[union-attr]
        assert text_of(items).encode() == content
    f.close()


@pytest.mark.parametrize(("buf", "cut"), [
    (b"", 0), (b"a", 1), (b"\xc3", 0), (b"a\xc3", 1), (b"\xc3\xa9", 2), (b"\xe2\x82", 0),
    (b"\xe2\x82\xac", 3), (b"\xf0\x9f\x98", 0), (b"\xf0\x9f\x98\x80", 4), (b"\xff", 1),
    (b"\x80\x80\x80\x80", 4), (b"\xc0", 1), (b"a\xf5", 2), (b"\xe2\x82\xac\xe2", 3),
])
def test_utf8_safe_cut(buf: bytes, cut: int) -> None:
    assert utf8_safe_cut(buf) == cut


# -- big files and the guard -------------------------------------------------

def _bytes_read() -> int:
    """What this process has read so far (``rchar`` of ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_sparse_10gib_file_costs_what_appends_cost(log: Path) -> None:
    with log.open("wb") as out:
        out.truncate(10 * 1024**3)
    read_before = _bytes_read()
    f = FileFollower(str(log), binary=True)
    assert f.start(lines=0).offset == 10 * 1024**3
    for i in range(20):
        with log.open("ab") as out:
            out.write(b"line %d\n" % i)
        assert bytes_of(drain(f)) == b"line %d\n" % i
    # each step is a pread of a few bytes, not a scan of 10 GiB (counted, not timed)
    assert _bytes_read() - read_before < 1024 * 1024
    f.close()
    f = FileFollower(str(log), binary=True, backlog_bytes=4096)
    opened = f.start(lines=3)  # the backwards scan stops after the window
    assert opened.offset >= 10 * 1024**3 - 4096
    f.close()


def test_read_is_lazy_one_chunk_at_a_time(log: Path) -> None:
    log.write_bytes(b"x" * 1_000_000)
    f = FileFollower(str(log), binary=True, chunk_bytes=4096)
    f.start()
    it = f.read()
    first = next(it)
    assert isinstance(first, Chunk) and first.nbytes == 4096
    assert f.position is not None and f.position[2] == 4096  # nothing read ahead
    it.close()
    f.close()


def test_guard_refuses_file_resolving_elsewhere(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("no")
    inside = tmp_path / "root"
    inside.mkdir()
    (inside / "link.log").symlink_to(outside)
    f = FileFollower(str(inside / "link.log"),
                     guard=lambda real: real.startswith(str(inside) + os.sep))
    with pytest.raises(PathRefused):
        f.start()
    assert f.position is None
    f.close()


def test_waiting_is_told_again_after_file_returns_and_goes(log: Path) -> None:
    f = FileFollower(str(log))
    f.start()
    assert isinstance(drain(f)[0], Waiting)
    log.write_text("x")
    drain(f)
    log.unlink()
    assert notices(drain(f)) == ["waiting"]
    f.close()


# -- descriptors -------------------------------------------------------------

def open_fds_on(path: Path) -> int:
    """This process's descriptors open on ``path`` (from /proc: what the kernel holds)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == str(path)
        except OSError:
            pass  # the listing's own descriptor, gone
    return count


def test_followers_of_one_file_share_one_descriptor_and_each_reads_its_own_bytes(
        log: Path) -> None:
    log.write_bytes(b"one\ntwo\n")
    followers = [FileFollower(str(log), binary=True) for _ in range(50)]
    try:
        for i, f in enumerate(followers):
            f.start(offset=i % 8)
        assert open_fds_on(log) == 1
        with log.open("ab") as out:
            out.write(b"three\n")
        for i, f in enumerate(followers):
            assert bytes_of(drain(f)) == b"one\ntwo\nthree\n"[i % 8:]
        for f in followers[:-1]:
            f.close()
        assert open_fds_on(log) == 1  # the last one still reads
        with log.open("ab") as out:
            out.write(b"four\n")
        assert bytes_of(drain(followers[-1])) == b"four\n"
    finally:
        for f in followers:
            f.close()
            f.close()  # idempotent: never a second release
    assert open_fds_on(log) == 0


def test_a_rotated_file_keeps_its_descriptor_until_its_followers_drained_it(
        log: Path) -> None:
    log.write_bytes(b"old\n")
    a, b = FileFollower(str(log), binary=True), FileFollower(str(log), binary=True)
    try:
        a.start(offset=0)
        b.start(offset=0)
        assert bytes_of(drain(a)) == b"old\n"
        rotated = log.with_name("app.log.1")
        log.rename(rotated)
        log.write_bytes(b"new\n")
        with rotated.open("ab") as out:
            out.write(b"late\n")  # the writer had not reopened yet
        assert bytes_of(drain(a)) == b"late\nnew\n"
        assert open_fds_on(rotated) == 1  # b has not drained it yet
        assert open_fds_on(log) == 1
        assert bytes_of(drain(b)) == b"old\nlate\nnew\n"
        assert open_fds_on(rotated) == 0
        assert open_fds_on(log) == 1  # one for both
    finally:
        a.close()
        b.close()
    assert open_fds_on(log) == 0
