#!/usr/bin/env bash
# Regenerate .ci/constraints.txt: install the project with its test extras at the
# newest versions setup.cfg's ranges allow, in a throwaway virtual environment, and
# pin what was installed (pip, setuptools and wheel included). Run the suite with
# the new pins (bash .ci/run) before committing them.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip setuptools wheel >/dev/null
"$tmp/venv/bin/python" -m pip install -q --no-build-isolation -e '.[test]' >/dev/null
{
  sed -n '/^#/p' .ci/constraints.txt
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | sort -f
} >"$tmp/constraints.txt"
mv "$tmp/constraints.txt" .ci/constraints.txt
echo "pinned $(grep -c '==' .ci/constraints.txt) packages in .ci/constraints.txt"
