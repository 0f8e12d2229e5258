"""Write the table of every ``PINE_WS_*`` key into docs/config.md.

The table is made from ``flask_pine_ws.config.SETTINGS``, the one declaration
of every key (its default, its meaning, the ``Config`` field that overrides it
per route), and written into the page itself, between
``<!-- settings:begin -->`` and ``<!-- settings:end -->``: the page then reads
the same on the repository as on the built site. tests/test_docs.py fails when
the page's table is not what SETTINGS renders. With the project installed in .venv::

    .venv/bin/python scripts/render-config-table.py          # rewrite docs/config.md
    .venv/bin/python scripts/render-config-table.py --check  # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "config.md"
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
COMMAND = ".venv/bin/python scripts/render-config-table.py"

# the package from this checkout, installed or not
sys.path.insert(0, str(ROOT))

from flask_pine_ws.config import SETTINGS  # noqa: E402


def show_default(value: Any) -> str:
    """The default as Python writes it, with a size in MiB or KiB when it is one."""
    text = f"`{value!r}`"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1024:
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


# Markdown would read these as markup in a cell: "*" in a pattern as emphasis, "|" as a
# column, "<" as HTML. An "_" inside a word (TCP_INFO, watch_file) is never emphasis.
_MARKUP = re.compile(r"[\\`*|<\[\]]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _escape(text: str) -> str:
    return _MARKUP.sub(lambda m: "\\" + m.group(0), text)


def render() -> str:
    """The table, as Markdown, for the current SETTINGS."""
    missing = [s.key for s in SETTINGS if not s.doc.strip()]
    if missing:
        raise ValueError(f"no doc for {missing} in flask_pine_ws/config.py")
    rows = ["| Key | Default | Per route | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        field = f"`Config({s.field}=...)`" if s.field else "app-wide only"
        rows.append(f"| `{s.key}` | {show_default(s.default)} | {field} | {_escape(s.doc)} |")
    return "\n".join(rows) + "\n"


def page_with_table(page: str) -> str:
    """``page`` with the text between its markers replaced by the current table."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/config.md has no {BEGIN} ... {END} pair")
    start += len(BEGIN)
    return page[:start] + "\n" + render() + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the page's table is out of date")
    args = parser.parse_args(argv)
    current = PAGE.read_text(encoding="utf-8")
    wanted = page_with_table(current)
    if args.check:
        if wanted != current:
            print(f"docs/config.md: the settings table is out of date; run {COMMAND}")
            return 1
        return 0
    if wanted != current:
        PAGE.write_text(wanted, encoding="utf-8")
        print("docs/config.md: settings table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
