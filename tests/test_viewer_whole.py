"""The viewer over the whole file, in real headless Chromium against a real gunicorn.

Scroll back to byte 0 of a file of many MB and back to the live end, the
whole-file search and its matches opened in context, the download link, a
100 MiB line and a catastrophic regex that must not freeze the page, and
lines as written (ANSI colours, JSON lines, stack traces, binary files).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest
import test_viewer_browser
from playwright.sync_api import Page
from test_viewer_browser import (
    SHOWN_JS,
    append,
    data,
    file_lines,
    open_live,
    page_lines,
    start,
    wait_lines,
)

from conftest import ServerFactory
from helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: The Chromium page fixture (fails a test on any JavaScript error), shared with the viewer's
#: other browser tests.
page = test_viewer_browser.page


def responsive(pg: Page, deadline: float = 10) -> float:
    """Click Pause twice; how long the page took to handle both (it must, within ``deadline``)."""
    started = time.monotonic()
    pg.click("#pause", timeout=deadline * 1000)
    wait_until(lambda: data(pg, "paused") == "button", timeout=deadline, message="paused")
    pg.click("#pause", timeout=deadline * 1000)
    wait_until(lambda: not data(pg, "paused"), timeout=deadline, message="resumed")
    return time.monotonic() - started


def test_scroll_back_to_byte_0_and_back_to_the_live_end(server: ServerFactory, page: Page,
                                                        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:07d} INFO line {'x' * (i % 60)}\n" for i in range(90_000)))
    assert log.stat().st_size > 4_000_000
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app?max=3000")
    lines = file_lines(log)
    wait_lines(page, lines[-1000:])
    index_of: dict[int, int] = {}
    at = 0
    for i, line in enumerate(lines):
        index_of[at] = i
        at += len(line.encode()) + 1

    steps = 0
    while data(page, "top") != "0":
        top = data(page, "top")
        page.evaluate("(() => { const l = document.getElementById('log');"
                      " l.scrollTop = 1; l.scrollTop = 0; })()")
        wait_until(lambda: data(page, "top") != top and not data(page, "loading"),  # noqa: B023
                   timeout=20, message="earlier lines")
        shown = page_lines(page)
        first = index_of[int(data(page, "top"))]
        # What the page holds is always one unbroken run of the file's lines.
        assert shown == lines[first:first + len(shown)]
        assert len(shown) <= 3000
        steps += 1
        if steps == 3:  # live lines keep arriving meanwhile, off-page
            append(log, "".join(f"live {i}\n" for i in range(5)))
            wait_until(lambda: data(page, "pending") == "5", message="5 live lines counted")
    assert steps > 10
    assert page_lines(page)[0] == lines[0]

    # Follow: the page reloads the end, the live lines joined without a gap.
    page.click("#jump")
    lines = file_lines(log)
    wait_until(lambda: page_lines(page)[-6:] == lines[-6:], timeout=20, message="the end again")
    shown = page_lines(page)
    assert shown == lines[-len(shown):] and len(shown) <= 3000
    append(log, "after follow\n")
    wait_until(lambda: page_lines(page)[-1:] == ["after follow"], message="live again")


def test_search_streams_matches_opens_one_in_context_and_cancels(
        server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:06d} {'ERROR failed' if i % 2000 == 7 else 'INFO ok'}\n"
                           for i in range(60_000)))
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    lines = file_lines(log)
    want = [line for line in lines if "ERROR" in line]

    page.fill("#search", "error")
    page.click("#search-go")
    wait_until(lambda: data(page, "search") == "done", timeout=30, message="search done")
    got = page.evaluate("Array.from(document.querySelectorAll('#matches .mtext'))"
                        ".map(e => e.textContent)")
    assert got == want
    assert page.inner_text("#search-state").startswith(f"{len(want)} matches in ")

    page.click("#matches li:nth-child(3) .match")  # the third match, in its context
    wait_until(lambda: page.locator("#log .line.target").count() == 1, message="the match shown")
    assert page.inner_text("#log .line.target") == want[2]
    shown = page_lines(page)
    first = lines.index(shown[0])
    assert shown == lines[first:first + len(shown)] and len(shown) > 100
    assert page.locator("#log .line.target").is_visible()

    # Case toggle: "error" in lower case matches nothing with case on.
    page.check("#search-case")
    page.click("#search-go")
    wait_until(lambda: data(page, "search") == "done", timeout=30, message="search done")
    assert page.inner_text("#search-state").startswith("0 matches in ")

    # A search that takes long is cancelled by the same button.
    page.uncheck("#search-case")
    page.check("#search-re")
    append(log, "".join("a" * 30 + "!\n" for _ in range(5)))
    page.fill("#search", "(a+)+$")
    page.click("#search-go")
    wait_until(lambda: data(page, "search") == "running", message="running")
    page.click("#search-go")
    wait_until(lambda: data(page, "search") == "cancelled", message="cancelled")
    assert page.inner_text("#search-state").startswith("cancelled")


def test_download_link_is_relative_and_ranges_work_from_the_page(
        server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    assert page.get_attribute("#download", "href") == srv.url + "/logs/app/download"
    got = page.evaluate("fetch('app/download', {headers: {Range: 'bytes=5-20'}})"
                        ".then(r => r.text().then(t => [r.status, t]))")
    assert got == [206, log.read_bytes()[5:21].decode()]


def test_a_100_mib_line_does_not_freeze_the_page(server: ServerFactory, page: Page,
                                                 tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("before\n")
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_lines(page, ["before"])
    block = b"0123456789abcdef" * 65536  # 1 MiB
    with log.open("ab") as f:
        for _ in range(100):
            f.write(block)
    size = log.stat().st_size
    # The page keeps up with the unfinished line without rescanning it, and
    # answers a click meanwhile.
    while data(page, "offset") != str(size):
        assert responsive(page) < 10
        time.sleep(0.5)
    assert len(page.inner_text("#partial")) <= 10_000 + 20
    append(log, "\nafter\n")
    wait_until(lambda: page_lines(page)[-1:] == ["after"], timeout=30, message="the line ends")
    long_line = page.locator("#log .line").nth(1)
    assert len(long_line.inner_text()) <= 10_000 + 20
    assert responsive(page) < 10

    # The rest on demand: 64 KiB more per click, read by a Range request.
    long_line.locator(".more").click()
    wait_until(lambda: len(long_line.locator(".t").inner_text()) == 10_000 + 65536,
               message="more of the line")
    assert long_line.locator(".t").inner_text() == (block * 2)[:10_000 + 65536].decode()


def test_a_catastrophic_regex_in_a_link_is_refused_not_run(server: ServerFactory, page: Page,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join("a" * 40 + "!\n" for _ in range(20)) + "aaa\n")
    srv = start(server, {"app": log})
    page.goto(srv.url + "/logs/app?" + urllib.parse.urlencode({"q": "(a+)+$", "re": "1"}))
    wait_until(lambda: data(page, "state") == "live", message="live")
    wait_until(lambda: data(page, "filter") == "refused", timeout=20, message="refused")
    assert responsive(page) < 10
    assert "too long" in (page.get_attribute("#filter", "title") or "")
    assert len(page_lines(page)) == 21  # nothing hidden by a pattern that was not run
    # A sound pattern is applied.
    page.fill("#filter", "^a+$")
    wait_until(lambda: data(page, "filter") == "on", message="applied")
    wait_until(lambda: page.evaluate(
        "Array.from(document.querySelectorAll('#log .line')).filter(e => !e.hidden).length") == 1,
        message="filtered")


@pytest.mark.timeout(120)  # a frozen page hangs page.evaluate: fail in bounded time
def test_a_regex_that_explodes_on_a_later_line_is_turned_off_not_run(
        server: ServerFactory, page: Page, tmp_path: Path) -> None:
    # Fast on the page's lines and on the trial's probes, exponential on
    # "xyxy...": a pattern that passes the trial runs on every new line, and
    # one of them must not freeze the page either.
    pattern = "(xy|xy)+z"
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i} INFO xyz ok\n" if i % 3 == 0 else f"{i} INFO plain\n"
                           for i in range(30)))
    srv = start(server, {"app": log})
    page.goto(srv.url + "/logs/app?" + urllib.parse.urlencode({"q": pattern, "re": "1"}))
    wait_until(lambda: data(page, "state") == "live", message="live")
    wait_until(lambda: data(page, "filter") == "on", timeout=20, message="applied")
    wait_until(lambda: page.evaluate(SHOWN_JS) == [f"{i} INFO xyz ok" for i in range(0, 30, 3)],
               message="filtered")
    assert page.evaluate("document.querySelector('#log mark').textContent") == "xyz"
    # New lines are matched as they come, in order.
    append(log, "30 INFO xyxyz new\n31 INFO plain\n")
    wait_until(lambda: page.evaluate(SHOWN_JS)[-1:] == ["30 INFO xyxyz new"], message="new match")
    # A partial line too: shown with its mark once matched, hidden if it does not match.
    append(log, "32 INFO half xyz")
    page.wait_for_selector("#partial:not([hidden]) mark")
    assert page.locator("#partial mark").inner_text() == "xyz"
    append(log, " whole\n33 INFO other half")
    wait_until(lambda: page.evaluate(SHOWN_JS)[-1:] == ["32 INFO half xyz whole"], message="whole")
    page.wait_for_selector("#partial", state="hidden")
    append(log, "\n")

    append(log, "34 INFO " + "xy" * 40 + "\n35 INFO after\n")
    assert responsive(page) < 10
    wait_until(lambda: data(page, "lines") == "36", timeout=20, message="the line arrived")
    assert responsive(page) < 10
    wait_until(lambda: data(page, "filter") == "refused", timeout=20, message="turned off")
    assert "too long" in (page.get_attribute("#filter", "title") or "")
    assert "invalid" in (page.get_attribute("#filter", "class") or "")
    # Every line shown, unfiltered and in order, and the page goes on.
    wait_until(lambda: len(page.evaluate(SHOWN_JS)) == 36, message="unfiltered")
    append(log, "36 INFO last\n")
    wait_until(lambda: page.evaluate(SHOWN_JS)[-1:] == ["36 INFO last"], message="still live")
    assert page_lines(page) == file_lines(log)


def test_lines_as_written(server: ServerFactory, page: Page, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    record = {"time": "2025-03-14T09:26:00Z", "level": "error", "msg": "charge failed",
              "order": 1234, "user": {"id": 7}}
    log.write_text(
        "\x1b[1;31mERROR\x1b[0m plain \x1b[38;5;208morange\x1b[39m \x1b[2Kend\n"
        + json.dumps(record) + "\n"
        + "2025 ERROR payment failed\nTraceback (most recent call last):\n"
          '  File "pay.py", line 4, in charge\nCardDeclined: no funds\n2025 INFO next\n')
    srv = start(server, {"app": log})
    open_live(page, srv.url + "/logs/app")
    wait_until(lambda: len(page_lines(page)) == 7, message="7 lines")
    lines = page_lines(page)
    assert lines[0] == "ERROR plain orange end"  # no escape sequence left as text
    red = page.locator("#log .line").first.locator("span.ansi-fg-31.ansi-bold")
    assert red.inner_text() == "ERROR"
    orange = page.locator("#log .line").first.locator(".t > span", has_text="orange")
    assert orange.evaluate("e => e.style.color") == "rgb(255, 135, 0)"
    assert lines[1] == "2025-03-14T09:26:00Z ERROR charge failed {2 fields}"
    json_line = page.locator("#log .line").nth(1)
    assert "lvl-error" in (json_line.get_attribute("class") or "")
    json_line.locator(".expand").click()
    assert json.loads(json_line.locator(".fields").inner_text()) == record

    # A stack trace stays with its line under a filter.
    page.fill("#filter", "payment")
    wait_until(lambda: page.evaluate(
        "Array.from(document.querySelectorAll('#log .line')).filter(e => !e.hidden)"
        ".map(e => e.textContent)") == lines[2:6], message="the trace kept together")
    assert page.inner_text("#count") == "4 of 7 lines"
    page.fill("#filter", "next")
    wait_until(lambda: page.inner_text("#count") == "1 of 7 lines", message="1 of 7 lines")

    one = tmp_path / "one.log"
    one.write_text("only\n")
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    srv2 = start(server, {"one": one, "bin": binary})
    open_live(page, srv2.url + "/logs/one")
    wait_lines(page, ["only"])
    assert page.inner_text("#count") == "1 line"
    page.goto(srv2.url + "/logs/bin")
    wait_until(lambda: data(page, "state") == "binary", message="binary")
    assert page.inner_text("#log .notice").startswith("This file is binary")
    assert not page_lines(page)


def test_several_files_merged_in_arrival_order_and_split(server: ServerFactory, page: Page,
                                                         tmp_path: Path) -> None:
    app_log, worker_log = tmp_path / "app.log", tmp_path / "worker.log"
    app_log.write_text("app old\n")
    worker_log.write_text("worker old\n")
    srv = start(server, {"app": app_log, "worker": worker_log})
    page.goto(srv.url + "/logs/")
    page.check("input[value=app]")
    page.check("input[value=worker]")
    page.click("#view-merge")
    wait_until(lambda: sorted(page_lines(page)) == ["app old", "worker old"],
               message="both files' lines")
    assert page.url == srv.url + "/logs/?merge=app%2Cworker"
    want = [("app", "app old"), ("worker", "worker old")]
    for i in range(3):
        for name, path in (("app", app_log), ("worker", worker_log)):
            append(path, f"{name} {i}\n")
            want.append((name, f"{name} {i}"))
            wait_until(lambda: page_lines(page)[-1:] == [want[-1][1]],
                       message="the line in the merged view")
    tagged = page.evaluate("Array.from(document.querySelectorAll('#log .line'))"
                           ".map(e => [e.dataset.tag, e.textContent])")
    assert sorted(map(tuple, tagged[:2])) == want[:2]
    assert [tuple(t) for t in tagged[2:]] == want[2:]
    assert page.inner_text("#count") == "8 lines"
    page.fill("#filter", "worker")  # the filter works on the merged lines
    wait_until(lambda: page.inner_text("#count") == "4 of 8 lines", message="filtered")

    page.goto(srv.url + "/logs/?split=app,worker")
    wait_until(lambda: data(page, "state") == "split", message="split")
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 2
    for frame, path in zip(frames, (app_log, worker_log), strict=True):
        wait_until(lambda f=frame, p=path: f.evaluate(  # type: ignore[misc]
            "Array.from(document.querySelectorAll('#log .line')).map(e => e.textContent)")
            == file_lines(p), message="a pane's lines")
