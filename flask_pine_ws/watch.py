"""watch_file: placeholder until the file follower lands (issue 3)."""

from __future__ import annotations

from typing import Any

from .conn import Conn


def watch_file(path: str, conn: Conn, **options: Any) -> None:
    raise NotImplementedError("watch_file is being built (issue 3)")
