#!/usr/bin/env bash
# Install everything the tests need and run them: the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy flask_pine_ws
.venv/bin/python -m pytest "$@"
