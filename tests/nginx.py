"""A real nginx in front of a test server, with the site configuration the docs recommend.

The site is the ``<!-- test: nginx -->`` block of ``docs/deployment.md``, taken
as printed; only what must differ on a test machine is replaced, each by an
exact textual substitution that fails loudly if the page changes: the
``listen`` address (127.0.0.1 and a free port), the upstream's address (the
test's gunicorn), and, where a test says so, ``proxy_read_timeout`` (a short
one, to see pings keep a quiet socket open). The main configuration around it
keeps every path in the test's temporary directory: pid file, error log,
temporary files. nginx runs in the foreground (``daemon off``) as a child of
the test, and stops (SIGQUIT, then SIGKILL) when the context ends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from server import Loopback, stop_process

DEPLOYMENT_PAGE = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def recommended_site() -> str:
    """The nginx site of ``docs/deployment.md``, exactly as the page prints it."""
    text = DEPLOYMENT_PAGE.read_text(encoding="utf-8")
    found = re.search(r"<!-- test: nginx -->\n```nginx\n(.*?)\n```", text, re.S)
    assert found, "docs/deployment.md lost its <!-- test: nginx --> block"
    return found.group(1) + "\n"


def _replace(site: str, old: str, new: str) -> str:
    assert site.count(old) == 1, f"the recommended site no longer has exactly one {old!r}"
    return site.replace(old, new)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx(Loopback):
    """A running nginx; ``port``, ``url``, ``ws_url`` point at it."""

    def __init__(self, port: int, proc: subprocess.Popen[bytes], directory: Path) -> None:
        self.port = port
        self.proc = proc
        self.directory = directory

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def nginx_in_front(upstream_port: int, directory: Path, *,
                   read_timeout: str | None = None,
                   site_for: Callable[[int], str] | None = None) -> Iterator[Nginx]:
    """Run nginx with the recommended site, proxying to ``127.0.0.1:upstream_port``.

    :param read_timeout: replaces the page's ``proxy_read_timeout 60s`` (``"3s"``).
    :param site_for: another site instead, given the port nginx listens on.
    """
    assert os.path.exists(NGINX), "nginx is installed by scripts/install-system-deps.sh"
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    if site_for is not None:
        site = site_for(port)
    else:
        site = recommended_site()
        site = _replace(site, "listen 80;", f"listen 127.0.0.1:{port};")
        site = _replace(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    if read_timeout is not None:
        site = _replace(site, "proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout};")
    (directory / "site.conf").write_text(site)
    temps = ("body", "proxy", "fastcgi", "uwsgi", "scgi")
    for temp in temps:
        (directory / temp).mkdir(exist_ok=True)
    temp_paths = "\n".join(f"    {'client_body' if t == 'body' else t}_temp_path {directory}/{t};"
                           for t in temps)
    (directory / "nginx.conf").write_text(textwrap.dedent(f"""\
        worker_processes 1;
        pid {directory}/nginx.pid;
        error_log {directory}/error.log info;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
        """) + temp_paths + f"\n    include {directory}/site.conf;\n}}\n")
    argv = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    tested = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stderr
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                log = (directory / "error.log").read_text()
                assert proc.poll() is None, f"nginx exited:\n{log}"
                assert time.monotonic() < deadline, "nginx did not start within 20 s"
                time.sleep(0.05)
        yield Nginx(port, proc, directory)
    finally:
        stop_process(proc, signal.SIGQUIT, 15)  # SIGQUIT: nginx's graceful shutdown
