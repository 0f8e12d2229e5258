#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing:
#   chromium     the viewer's tests drive the page in real headless Chromium
#   nginx-light  the deployment tests put a real nginx in front of gunicorn
#   redis-server the channel tests start a real Redis on a free port
#   openssl      the command line's TLS tests make a self-signed certificate
#   apache2-utils  its htpasswd writes the files the command line's login reads
# Run as root (or with sudo). Nothing is downloaded outside Debian's archive.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# apt's own chatter (debconf's notes on a machine without apt-utils) is kept in a
# log and shown only when an install fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "installing ${need[*]} from Debian's archive"
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
