"""Run ``module:app`` on Werkzeug's development server, on the socket the test bound."""

from __future__ import annotations

import importlib
import os
import sys

from werkzeug.serving import make_server

sys.path.insert(0, os.path.dirname(__file__))
module, _, name = sys.argv[1].partition(":")
app = getattr(importlib.import_module(module), name or "app")
fd = int(os.environ["PINE_TEST_LISTEN_FD"])
make_server("127.0.0.1", 0, app, threaded=True, fd=fd).serve_forever()
