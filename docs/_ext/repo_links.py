"""Links from a docs page to a file of the repository outside ``docs/``.

On the repository's web view ``[bench/README.md](../bench/README.md)`` is a
working link, and the pages are written for it; in the built site there is no
such file, and MyST warns (which ``-W`` makes an error). When a page is read,
each Markdown link whose target leaves ``docs/`` and names a file that exists
in the repository becomes the link text followed by the path in code, so the
reader still learns where to look. Links to missing files are left alone: MyST
then reports them, as it should.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def _rewrite(app: Sphinx, docname: str, source: list[str]) -> None:
    page_dir = (Path(app.srcdir) / docname).parent
    repo = Path(app.srcdir).parent.resolve()

    def replace(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        path = (page_dir / target).resolve()
        if not path.exists() or not path.is_relative_to(repo):
            return match.group(0)
        shown = path.relative_to(repo).as_posix()
        return text if text.strip("`") == shown else f"{text} (`{shown}`)"

    source[0] = _LINK.sub(replace, source[0])


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _rewrite)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
