#!/usr/bin/env bash
# What `make bench` needs beyond the project's venv: wrk (Debian's package) and the SDK reference's own venv,
# which holds only `pip install mcp` (same versions as requirements.lock, so no uvloop and no httptools).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    else
        SUDO=
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk >/dev/null
fi

SDK_VENV="$VENV/sdk-reference"
STAMP="$SDK_VENV/.installed-$(cksum < requirements.lock | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
    rm -rf "$SDK_VENV"
    "$VENV/bin/python" -m venv "$SDK_VENV"
    # The lock's pins without their hashes (a constraints file may not carry them) or line continuations.
    PINS="$SDK_VENV/pins.txt"
    sed -e 's/[[:space:]]*\\$//' -e '/^[[:space:]]*--hash=/d' -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
        requirements.lock > "$PINS"
    MCP_PIN=$(grep '^mcp==' "$PINS")
    # (grep: a site-wide pip configuration may warn about each package; pipefail keeps pip's exit status)
    "$SDK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --constraint "$PINS" "$MCP_PIN" \
        2>&1 | { grep -v '^WARNING: Location' || true; }
    touch "$STAMP"
fi
