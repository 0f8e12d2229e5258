"""Sphinx configuration of the flask-pine-ws docs.

Pages are Markdown (MyST), so that the README's links and the pages other
parts of the project write (protocol.md, benchmarks.md) read the same on the
repository and on the built site; the API reference is reST with autodoc.
Build with warnings as errors: ``sphinx-build -W -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package, without installing it
sys.path.insert(0, str(HERE / "_ext"))

project = "flask-pine-ws"
author = "the flask-pine-ws authors"
copyright = "the flask-pine-ws authors"  # Sphinx's name for it

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "repo_links",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_static", "Thumbs.db", ".DS_Store"]

# Headings get anchors, so pages can link to "deployment.md#nginx".
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = "flask-pine-ws"
html_theme_options = {
    "description": "WebSocket routes in one decorator, and live logs, for Flask",
    "fixed_sidebar": True,
    # alabaster's 940 px left wide tables and screenshots unreadable
    "page_width": "1240px",
    "body_max_width": "none",
}
# Wide tables scroll, images never overflow (see _static/custom.css).
html_static_path = ["_static"]
html_css_files = ["custom.css"]
