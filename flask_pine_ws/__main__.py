"""``python -m flask_pine_ws serve FILE...``: the same as the ``flask-pine-ws`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
