"""Sphinx directive ``pine-ws-settings``: the table of every ``PINE_WS_*`` key.

The table is built at docs build time from ``flask_pine_ws.config.DEFAULTS``
and the comment above each key in ``config.py``, so the documented keys,
defaults and meanings cannot drift from the code: adding a key there adds a
row here. A key whose name, less the prefix and in lower case, is a field of
:class:`flask_pine_ws.Config` can also be set per route; the table says so.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

from flask_pine_ws import config as config_module


def key_comments() -> dict[str, str]:
    """Each ``DEFAULTS`` key and the comment lines just above it, joined."""
    source = inspect.getsource(config_module)
    lines = source.splitlines()
    tree = ast.parse(source)
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.AnnAssign | ast.Assign):
            continue
        targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
        if not any(isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in targets):
            continue
        assert isinstance(node.value, ast.Dict)
        for key in node.value.keys:
            assert isinstance(key, ast.Constant) and isinstance(key.value, str)
            comment: list[str] = []
            row = key.lineno - 2  # the line above, 0-based
            while row >= 0 and lines[row].strip().startswith("#"):
                comment.insert(0, lines[row].strip().lstrip("#").strip())
                row -= 1
            found[key.value] = " ".join(comment)
    return found


def show_default(value: Any) -> str:
    """The default as Python writes it, with a size in MiB or KiB when it is one."""
    text = repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1024:
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


def route_field(key: str) -> str | None:
    """The :class:`Config` field that overrides ``key`` per route, if any."""
    name = key.removeprefix("PINE_WS_").lower()
    names = {f.name for f in dataclasses.fields(config_module.Config)}
    return name if name in names else None


def _entry(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


class SettingsTable(Directive):
    """``.. pine-ws-settings::``: a table of key, default, per-route field, meaning."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        comments = key_comments()
        missing = [key for key in config_module.DEFAULTS if not comments.get(key)]
        if missing:
            raise self.error(f"no comment above {missing} in flask_pine_ws/config.py")
        headers = ("Key", "Default", "Per route", "Meaning")
        table = nodes.table(classes=["pine-ws-settings"])
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in (28, 18, 16, 50):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        row = nodes.row()
        for title in headers:
            row += _entry(nodes.Text(title))
        head += row
        body = nodes.tbody()
        group += body
        for key, value in config_module.DEFAULTS.items():
            row = nodes.row(ids=[nodes.make_id(key)])
            row += _entry(nodes.literal(text=key))
            row += _entry(nodes.literal(text=show_default(value)))
            field = route_field(key)
            row += _entry(nodes.literal(text=f"Config({field}=...)") if field
                          else nodes.Text("app-wide only"))
            row += _entry(nodes.Text(comments[key]))
            body += row
        return [table]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pine-ws-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
