#!/usr/bin/env bash
# Installs what the benchmark measures against, when it is missing:
#   - websocketd (Debian package), which runs `tail -F` per connection;
#   - frontail (npm), into bench/node_modules, at the version package-lock.json pins;
#   - the Python packages of the `bench` extra (websockets, matplotlib).
# GNU tail (coreutils) and node/npm are expected from the system; node and npm
# are installed from Debian when missing. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages=()
command -v websocketd >/dev/null || apt_packages+=(websocketd)
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
command -v tail >/dev/null || apt_packages+=(coreutils)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    echo "apt-get install ${apt_packages[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${apt_packages[@]}"
fi

if [ ! -f node_modules/frontail/index.js ]; then
    echo "npm ci (frontail)"
    npm ci --no-audit --no-fund
fi

python3 - <<'PY' || python3 -m pip install "websockets>=13,<18" "matplotlib>=3.8,<4"
import matplotlib, websockets  # noqa: F401
PY

echo "ready: websocketd $(websocketd --version 2>&1 | head -1 | awk '{print $2}'), node $(node --version), frontail $(node -p "require('./node_modules/frontail/package.json').version")"
