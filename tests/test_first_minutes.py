"""The first minutes of a new user: the command without arguments, the example on a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_command_without_arguments_prints_its_help() -> None:
    done = subprocess.run([sys.executable, "-m", "flask_pine_ws"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: flask-pine-ws") and "serve" in done.stdout
    assert done.stderr == ""


def test_example_app_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, str(ROOT / "example_app.py"), "--port", str(port),
                               "--log", str(tmp_path / "demo.log")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"port {port} is in use" in lines[0] and "--port" in lines[0] and "PORT=" in lines[0]
