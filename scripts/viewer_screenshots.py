"""Take the viewer's screenshots in docs/img/ (viewer*.png) with headless Chromium.

Run from the repository root: ``python scripts/viewer_screenshots.py``. It
writes a sample log in a temporary directory, serves it with
``python -m flask_pine_ws serve`` on a free port, and drives Debian's
``/usr/bin/chromium`` with Playwright (no browser download).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def sample_lines(rng: random.Random, start: int, count: int) -> str:
    out = []
    for i in range(start, start + count):
        stamp = f"2025-03-14 09:{26 + i // 60:02d}:{i % 60:02d}.{rng.randint(0, 999):03d}"
        kind = rng.choices(["info", "debug", "warn", "error"], weights=[10, 4, 2, 1])[0]
        if kind == "info":
            text = (f"INFO  [http] GET /api/orders/{rng.randint(100, 9999)} 200 "
                    f"{rng.randint(2, 300)}ms")
        elif kind == "debug":
            text = f"DEBUG [db] query orders.by_customer took {rng.randint(1, 90)}ms"
        elif kind == "warn":
            text = f"WARN  [pool] connection pool at {rng.randint(85, 99)}% of 100"
        else:
            text = f"ERROR [payments] charge {rng.randint(100, 999)} failed: card declined"
        out.append(f"{stamp} {text}\n")
        if kind == "error" and i % 2:
            out.append('Traceback (most recent call last):\n  File "/srv/app/pay.py", line 42,'
                       ' in charge\n    raise CardDeclined(code)\nCardDeclined: card_declined\n')
    return "".join(out)


#: What the "lines as written" shot shows: colours from a tool that writes
#: ANSI codes, JSON lines from a structured logger, a Java stack trace.
WRITTEN = (
    "\x1b[2m2025-03-14 09:27:10\x1b[0m \x1b[32mINFO \x1b[0m \x1b[1mworker\x1b[0m picked job "
    "\x1b[36m#4711\x1b[0m (queue \x1b[35memails\x1b[0m)\n"
    "\x1b[2m2025-03-14 09:27:11\x1b[0m \x1b[33mWARN \x1b[0m \x1b[1mworker\x1b[0m retry "
    "\x1b[38;5;208m2/5\x1b[0m after \x1b[4mSMTP 421\x1b[0m\n"
    '{"time": "2025-03-14T09:27:12Z", "level": "error", "msg": "job failed", "job": 4711, '
    '"queue": "emails", "attempt": 2, "error": {"type": "SMTPServerDisconnected", '
    '"detail": "Connection unexpectedly closed"}}\n'
    '{"time": "2025-03-14T09:27:13Z", "level": "info", "msg": "job done", "job": 4712, '
    '"ms": 84}\n'
    "2025-03-14 09:27:14 ERROR [billing] invoice run aborted\n"
    "java.lang.IllegalStateException: ledger locked\n"
    "\tat com.shop.billing.Ledger.lock(Ledger.java:88)\n"
    "\tat com.shop.billing.InvoiceRun.start(InvoiceRun.java:41)\n"
    "Caused by: java.util.concurrent.TimeoutException\n"
    "\t... 12 more\n"
    "\x1b[2m2025-03-14 09:27:15\x1b[0m \x1b[32mINFO \x1b[0m \x1b[1mworker\x1b[0m idle\n"
)


def wait(page: Page, script: str, timeout: float = 20) -> None:
    # Polled from here: wait_for_function evaluates a string in the page,
    # which the page's Content-Security-Policy (no eval) forbids.
    deadline = time.monotonic() + timeout
    while not page.evaluate(script):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {script}")
        time.sleep(0.05)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        log.write_text(sample_lines(rng, 0, 60))
        (Path(tmp) / "worker.log").write_text(sample_lines(rng, 0, 5))
        out = Path(tmp) / "out.txt"
        with out.open("wb") as fout:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flask_pine_ws", "serve", str(log),
                 str(Path(tmp) / "worker.log"), "--port", "0", "--title", "shop"],
                stdout=fout, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 30
            while not (match := re.search(r"(http://\S+/)", out.read_text())):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the server did not start:\n{out.read_text()}")
                time.sleep(0.1)
            url = match[1]
            shoot(url, log, rng)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def shoot(url: str, log: Path, rng: random.Random) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            for scheme in ("dark", "light"):
                page = browser.new_page(viewport={"width": 1100, "height": 560},
                                        color_scheme=scheme, device_scale_factor=1)
                page.goto(url + "app.log")
                wait(page, "document.body.dataset.state === 'live'")
                wait(page, "Number(document.body.dataset.lines) > 50")
                second = 1 if scheme == "dark" else 2
                with log.open("a") as f:
                    f.write(f"2025-03-14 09:27:0{second}.512 INFO  [http] POST /api/cart 201 37ms")
                wait(page, "!document.getElementById('partial').hidden")
                time.sleep(0.3)
                suffix = "" if scheme == "dark" else "-light"
                page.screenshot(path=OUT / f"viewer{suffix}.png")
                with log.open("a") as f:
                    f.write("\n")
                page.close()

            page = browser.new_page(viewport={"width": 1100, "height": 560}, color_scheme="dark")
            page.goto(url + "app.log?q=" + "error|warn" + "&re=1")
            wait(page, "document.body.dataset.state === 'live'")
            time.sleep(0.5)
            page.screenshot(path=OUT / "viewer-filter.png")

            page.goto(url + "app.log")
            wait(page, "document.body.dataset.state === 'live'")
            os.rename(log, str(log) + ".1")
            log.write_text(sample_lines(rng, 70, 6))
            wait(page, "document.querySelectorAll('#log .notice').length === 1")
            page.click("#pause")
            with log.open("a") as f:
                f.write(sample_lines(rng, 80, 12))
            wait(page, "Number(document.body.dataset.pending) >= 12")
            time.sleep(0.3)
            page.screenshot(path=OUT / "viewer-paused.png")

            # Search the whole file, a match opened in its context.
            page = browser.new_page(viewport={"width": 1100, "height": 560}, color_scheme="dark")
            page.goto(url + "app.log")
            wait(page, "document.body.dataset.state === 'live'")
            page.fill("#search", "card declined")
            page.click("#search-go")
            wait(page, "document.body.dataset.search === 'done'")
            page.click("#matches li:nth-child(2) .match")
            wait(page, "!!document.querySelector('#log .line.target')")
            time.sleep(0.3)
            page.screenshot(path=OUT / "viewer-search.png")

            # Lines as written: ANSI colours, a JSON line opened, a trace kept together.
            worker = log.with_name("worker.log")
            with worker.open("a") as f:
                f.write(WRITTEN)
            page.goto(url + "worker.log")
            wait(page, "document.body.dataset.state === 'live'")
            wait(page, "!!document.querySelector('#log .line.json .expand')")
            page.click("#log .line.json .expand >> nth=0")
            time.sleep(0.3)
            page.screenshot(path=OUT / "viewer-lines.png")
            page.close()

            # Two files merged, lines arriving in both.
            page = browser.new_page(viewport={"width": 1100, "height": 560}, color_scheme="dark")
            page.goto(url + "?merge=app.log,worker.log")
            wait(page, "Number(document.body.dataset.lines) > 20")
            for i in range(8):
                with (log if i % 3 else worker).open("a") as f:
                    f.write(sample_lines(rng, 100 + i, 1) if i % 3 else
                            f"2025-03-14 09:28:0{i} INFO  worker sent mail #{4800 + i}\n")
                time.sleep(0.15)
            time.sleep(0.5)
            page.screenshot(path=OUT / "viewer-merged.png")
            page.close()

            page = browser.new_page(viewport={"width": 1100, "height": 560}, color_scheme="dark")
            page.goto(url)
            time.sleep(0.5)
            page.set_viewport_size({"width": 700, "height": 220})
            page.screenshot(path=OUT / "viewer-index.png")
        finally:
            browser.close()
    print(f"wrote {', '.join(sorted(p.name for p in OUT.glob('viewer*.png')))} in {OUT}")


if __name__ == "__main__":
    main()
