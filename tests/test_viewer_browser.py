"""The viewer page in real headless Chromium, against a real gunicorn.

Debian's ``/usr/bin/chromium`` driven by Playwright (no browser download);
the page is served by tests/apps/viewer_app.py under gunicorn (gthread).
Each test compares what the page shows with what the file holds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from conftest import ServerFactory
from helpers import wait_until
from server import Server

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

LINES_JS = "Array.from(document.querySelectorAll('#log .line')).map(e => e.textContent)"
SHOWN_JS = ("Array.from(document.querySelectorAll('#log .line')).filter(e => !e.hidden)"
            ".map(e => e.textContent)")
NOTICES_JS = "Array.from(document.querySelectorAll('#log .notice')).map(e => e.textContent)"


@pytest.fixture
def page() -> Iterator[Page]:
    """A fresh Chromium page; fails the test on any JavaScript error of the page."""
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1000, "height": 600})
            pg.set_default_timeout(20_000)
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            yield pg
        finally:
            browser.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def start(server: ServerFactory, files: dict[str, Path], workers: int = 1, **env: str) -> Server:
    return server("viewer_app:app", workers=workers, env={
        "PINE_VIEWER_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env})


def append(path: Path, text: str | bytes) -> None:
    with path.open("ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def file_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def page_lines(pg: Page) -> list[str]:
    result: list[str] = pg.evaluate(LINES_JS)
    return result


def wait_lines(pg: Page, expected: list[str], timeout: float = 20) -> None:
    last: list[Any] = []

    def same() -> bool:
        last[:] = page_lines(pg)
        return last == expected

    try:
        wait_until(same, timeout=timeout, message="the page's lines")
    except AssertionError:
        assert last == expected  # shows the difference
        raise


def data(pg: Page, key: str) -> str:
    value: str = pg.evaluate(f"document.body.dataset[{key!r}] || ''")
    return value


def open_live(pg: Page, url: str) -> None:
    pg.goto(url)
    wait_until(lambda: data(pg, "state") == "live", timeout=20, message="live state")


# -- lines ---------------------------------------------------------------------------


def test_lines_appear_as_written_and_partial_lines_once_whole(
        server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("2024-01-01 INFO start\n2024-01-01 DEBUG config loaded\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))
    assert page.locator("#state").inner_text() == "live"

    append(log, "2024-01-01 WARN disk 91% full\n2024-01-01 ERROR café ☕ failed\n")
    wait_lines(page, file_lines(log))

    # A line without its newline yet is shown apart, marked, not as a line.
    append(log, "2024-01-01 INFO half a li")
    page.wait_for_selector("#partial:not([hidden])")
    assert page.locator("#partial").inner_text().startswith("2024-01-01 INFO half a li")
    assert len(page_lines(page)) == 4
    # Its end arrives in another message, in the middle of a UTF-8 character.
    append(log, "ne \xe2".encode("latin-1"))
    time.sleep(0.3)
    append(log, "\x9c\x93\n".encode("latin-1"))  # "✓" = e2 9c 93
    wait_lines(page, file_lines(log))
    assert page_lines(page)[-1] == "2024-01-01 INFO half a line ✓"
    page.wait_for_selector("#partial", state="hidden")
    assert data(page, "offset") == str(log.stat().st_size)


def test_log_text_is_never_markup(server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    evil = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b><script>x()</script>'
    log.write_text(evil + "\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, [evil])
    page.fill("#filter", "bold")  # highlighting must not turn it into markup either
    wait_until(lambda: page.locator("#log mark").count() == 1, message="a mark")
    assert page.locator("#log img, #log b, #log script").count() == 0
    assert page.title() == "app · Logs"


def test_levels_are_highlighted(server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("t ERROR boom\nTraceback (most recent call last):\n  File x\n"
                   "CardDeclined: no funds\nt WARNING low disk\nt INFO ok\nt DEBUG detail\n"
                   "level=error msg=x\nplain line\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))
    classes = page.evaluate(
        "Array.from(document.querySelectorAll('#log .line')).map(e => e.className)")
    # The traceback's lines continue the error line: its level, marked as part of it.
    assert classes == ["line lvl-error"] + ["line cont lvl-error"] * 3 + [
        "line lvl-warn", "line lvl-info", "line lvl-debug", "line lvl-error", "line"]


# -- filter ----------------------------------------------------------------------------


def test_filter_hides_highlights_and_lives_in_the_url(server: ServerFactory, page: Page,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("1 INFO GET /a 200\n2 ERROR db down\n3 WARN slow GET /b\n4 error again\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))

    page.fill("#filter", "error")
    wait_until(lambda: page.evaluate(SHOWN_JS) == ["2 ERROR db down", "4 error again"],
               message="plain filter")
    assert page.evaluate(
        "Array.from(document.querySelectorAll('#log mark')).map(e => e.textContent)"
    ) == ["ERROR", "error"]
    wait_until(lambda: "q=error" in page.url, message="the filter in the URL")
    assert page.locator("#count").inner_text() == "2 of 4 lines"

    # New lines are filtered as they come.
    append(log, "5 INFO fine\n6 ERROR disk\n")
    wait_until(lambda: page.evaluate(SHOWN_JS)[-1:] == ["6 ERROR disk"], message="new match")
    assert len(page_lines(page)) == 6

    # Regex mode: "." is any character, and the URL says so.
    page.fill("#filter", r"GET /\w 200|WARN")
    page.check("#regex")
    wait_until(lambda: page.evaluate(SHOWN_JS) == ["1 INFO GET /a 200", "3 WARN slow GET /b"],
               message="regex filter")
    wait_until(lambda: "re=1" in page.url, message="regex flag in the URL")

    # A link with the filter opens the page filtered.
    shared = page.url
    page.goto(shared)
    wait_until(lambda: page.evaluate(SHOWN_JS) == ["1 INFO GET /a 200", "3 WARN slow GET /b"],
               message="filter from the URL")
    assert page.input_value("#filter") == r"GET /\w 200|WARN"
    assert page.is_checked("#regex")

    # A broken regex is flagged, and hides nothing.
    page.fill("#filter", "(unclosed")
    wait_until(lambda: "invalid" in (page.get_attribute("#filter", "class") or ""),
               message="invalid regex flagged")
    wait_until(lambda: len(page.evaluate(SHOWN_JS)) == 6, message="everything shown")


# -- follow, pause, line cap -------------------------------------------------------------


def test_pause_button_holds_and_resumes_with_the_count(server: ServerFactory, page: Page,
                                                       tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))

    page.click("#pause")
    append(log, "".join(f"more {i}\n" for i in range(7)))
    wait_until(lambda: data(page, "pending") == "7", message="7 pending lines")
    assert len(page_lines(page)) == 10  # held
    assert page.locator("#pause").inner_text() == "Resume (7 new)"
    assert page.locator("#jump").is_visible()

    page.click("#pause")
    wait_lines(page, file_lines(log))
    assert data(page, "pending") == "0"
    assert page.locator("#pause").inner_text() == "Pause"


def test_scrolling_up_pauses_and_scrolling_to_the_end_resumes(
        server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))
    at_end = "(e => e.scrollHeight - e.scrollTop - e.clientHeight < 4)"
    assert page.locator("#log").evaluate(at_end)  # follows the end

    page.mouse.move(400, 300)
    page.mouse.wheel(0, -3000)
    wait_until(lambda: data(page, "paused") == "scroll", message="paused by scrolling")
    append(log, "".join(f"new {i}\n" for i in range(5)))
    wait_until(lambda: data(page, "pending") == "5", message="5 pending lines")
    assert len(page_lines(page)) == 200
    assert "5 new lines" in page.locator("#jump").inner_text()

    for _ in range(20):  # back down to the end, as a user would
        page.mouse.wheel(0, 3000)
        if not data(page, "paused"):
            break
        time.sleep(0.1)
    wait_lines(page, file_lines(log))
    wait_until(lambda: page.locator("#log").evaluate(at_end), message="following again")

    # Following again: the next lines come in and the end stays in view.
    append(log, "after\n")
    wait_lines(page, file_lines(log))
    wait_until(lambda: page.locator("#log").evaluate(at_end), message="end in view")

    # A change of the log's size (a narrower window wraps the toolbar) is no
    # scroll by the user: it does not pause, and the end stays in view.
    page.set_viewport_size({"width": 420, "height": 300})
    append(log, "after the resize\n")
    wait_lines(page, file_lines(log))
    wait_until(lambda: page.locator("#log").evaluate(at_end), message="end in view")
    assert not data(page, "paused")


def test_line_cap_keeps_the_newest_lines(server: ServerFactory, page: Page,
                                         tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"old {i}\n" for i in range(80)))
    srv = start(server, {"app": log}, PINE_VIEWER_MAX_LINES="50")
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log)[-50:])  # lines=1000 is capped at max_lines

    for burst in range(5):
        append(log, "".join(f"burst {burst} line {i}\n" for i in range(60)))
        wait_lines(page, file_lines(log)[-50:])
    assert data(page, "lines") == "50"

    # ?max=N lowers it for one page (a link can carry it).
    open_live(page, srv.url + "/logs/app?max=10")
    wait_lines(page, file_lines(log)[-10:])
    page.click("#pause")
    append(log, "".join(f"while paused {i}\n" for i in range(100)))
    wait_until(lambda: data(page, "pending") == "100", message="100 pending")
    page.click("#pause")
    wait_lines(page, file_lines(log)[-10:])
    assert page.locator("#log > *").count() <= 12  # 10 lines, the partial, no leftovers


# -- reconnect, rotation ---------------------------------------------------------------


class Writer:
    """Appends numbered lines from a thread, some split inside a UTF-8 character."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self.run, name="test-log-writer")

    def run(self) -> None:
        with self.path.open("ab") as f:
            while not self.stop.is_set():
                line = f"{self.count:05d} INFO café ☕ request {'x' * (self.count % 50)}\n"
                raw = line.encode()
                if self.count % 7 == 0:
                    cut = raw.index("☕".encode()) + 1  # inside the 3-byte character
                    f.write(raw[:cut])
                    f.flush()
                    time.sleep(0.02)
                    raw = raw[cut:]
                f.write(raw)
                f.flush()
                self.count += 1
                time.sleep(0.01)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_server_restart_loses_and_repeats_nothing(server: ServerFactory, page: Page,
                                                  tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("start\n")
    srv = start(server, {"app": log}, workers=2)
    open_live(page, srv.url + "/logs/app")
    with Writer(log) as writer:
        wait_until(lambda: len(page_lines(page)) > 50, message="lines before the restart")
        srv.restart()
        wait_until(lambda: data(page, "opens") == "2", timeout=30, message="reconnected")
        seen = writer.count
        wait_until(lambda: writer.count > seen + 50, message="lines after the restart")
    try:
        wait_lines(page, file_lines(log), timeout=30)
    except AssertionError as exc:
        state = page.evaluate("({...document.body.dataset})")
        raise AssertionError(f"{exc}\npage: {state}, file size {log.stat().st_size}\n"
                             f"server log:\n{srv.log()[-3000:]}") from None
    assert not page.locator("#log .notice").count()
    assert data(page, "offset") == str(log.stat().st_size)

    # Twice more, with the page's reconnect landing on either worker.
    for _ in range(2):
        opens = int(data(page, "opens"))
        srv.restart()
        append(log, "written while the server was down\n")
        wait_until(lambda: int(data(page, "opens") or 0) > opens, timeout=30,  # noqa: B023
                   message="reconnected")
        wait_lines(page, file_lines(log), timeout=30)


def test_rotation_and_truncation_show_a_notice(server: ServerFactory, page: Page,
                                               tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("before 1\nbefore 2\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, file_lines(log))

    append(log, "last of the old file, no newline")
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("after 1\n")
    wait_until(lambda: page.evaluate(NOTICES_JS) == [
        "The file was rotated (renamed); following the new file from its start."],
        message="rotation notice")
    wait_lines(page, ["before 1", "before 2", "last of the old file, no newline", "after 1"])
    # The notice sits between the two files' lines.
    order = page.evaluate("Array.from(document.querySelectorAll('#log > :not([hidden])'))"
                          ".map(e => e.className)")
    assert order == ["line", "line", "line", "notice", "line"]

    with log.open("r+b") as f:
        f.truncate(0)
    wait_until(lambda: len(page.evaluate(NOTICES_JS)) == 2, message="truncation notice")
    assert page.evaluate(NOTICES_JS)[1] == "The file was truncated; following it from its start."
    log.write_text("fresh 1\n")
    wait_lines(page, ["before 1", "before 2", "last of the old file, no newline", "after 1",
                      "fresh 1"])


def test_missing_file_is_waited_for(server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    srv = start(server, {"later": log})
    page.goto(srv.url + "/logs/later")
    wait_until(lambda: data(page, "state") == "waiting", message="waiting state")
    assert "waiting" in page.locator("#state").inner_text()
    log.write_text("here now\n")
    wait_lines(page, ["here now"])
    wait_until(lambda: data(page, "state") == "live", message="live state")


def test_a_refusal_is_shown_and_not_retried(server: ServerFactory, page: Page,
                                            tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("out of bounds\n")
    # The app allows no file outside another directory: watch_file closes with 1008.
    srv = start(server, {"app": log},
                PINE_WS_WATCH_ROOTS=json.dumps([str(tmp_path / "elsewhere")]))
    page.goto(srv.url + "/logs/app")
    wait_until(lambda: data(page, "state") == "refused", message="refused state")
    assert "path outside the allowed watch roots" in page.locator("#state").inner_text()
    time.sleep(3)  # the first retry would have come after 0.5 s
    assert data(page, "state") == "refused" and not page_lines(page)
    assert data(page, "connects") == "1"

    page.click("#state")  # the user asks again
    wait_until(lambda: data(page, "connects") == "2", message="tried again")
    wait_until(lambda: data(page, "state") == "refused", message="refused again")


def test_an_unreadable_path_is_retried_and_shown(server: ServerFactory, page: Page,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.mkdir()  # a directory where the file should be: 1011 "cannot read the file"
    srv = start(server, {"app": path})
    page.goto(srv.url + "/logs/app")
    wait_until(lambda: "cannot read the file" in page.locator("#state").inner_text(),
               message="the reason shown")
    wait_until(lambda: int(data(page, "connects") or 0) >= 2, message="retried")
    path.rmdir()
    path.write_text("readable now\n")
    wait_lines(page, ["readable now"], timeout=40)  # the backoff may be at 8 s by now
    wait_until(lambda: data(page, "state") == "live", message="live")


def test_several_files_are_listed(server: ServerFactory, page: Page, tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("from a\n")
    (tmp_path / "b.log").write_text("from b\n")
    srv = start(server, {"a": tmp_path / "a.log", "b": tmp_path / "b.log"})
    page.goto(srv.url + "/logs/?q=from")
    assert page.evaluate("Array.from(document.querySelectorAll('.index a'))"
                         ".map(e => e.textContent)") == ["a", "b"]
    page.click(".index a >> text=b")
    wait_lines(page, ["from b"])
    assert page.url.endswith("/logs/b?q=from")  # the filter came along
    assert page.locator("#files a[aria-current=page]").inner_text() == "b"
