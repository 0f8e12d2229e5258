"""Sphinx directive ``pine-ws-settings``: the table of every ``PINE_WS_*`` key.

The table is built at docs build time from ``flask_pine_ws.config.SETTINGS``,
the one declaration of every key (its default, its meaning, the
:class:`flask_pine_ws.Config` field that overrides it per route), so the
documented keys, defaults and meanings cannot drift from the code: adding a
key there adds a row here.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx

from flask_pine_ws.config import SETTINGS


def key_comments() -> dict[str, str]:
    """Each key and its meaning (its ``Setting.doc``), in the order of ``SETTINGS``."""
    return {s.key: s.doc for s in SETTINGS}


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
    return {s.key: s.field for s in SETTINGS}[key]


def _entry(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


class SettingsTable(Directive):
    """``.. pine-ws-settings::``: a table of key, default, per-route field, meaning."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        missing = [s.key for s in SETTINGS if not s.doc.strip()]
        if missing:
            raise self.error(f"no doc for {missing} in flask_pine_ws/config.py")
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
        for setting in SETTINGS:
            row = nodes.row(ids=[nodes.make_id(setting.key)])
            row += _entry(nodes.literal(text=setting.key))
            row += _entry(nodes.literal(text=show_default(setting.default)))
            row += _entry(nodes.literal(text=f"Config({setting.field}=...)") if setting.field
                          else nodes.Text("app-wide only"))
            row += _entry(nodes.Text(setting.doc))
            body += row
        return [table]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("pine-ws-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
