#!/usr/bin/env bash
# Builds the Debian packages of dwa-relay and dwa-agent into target/debian
# with cargo-deb (installed here when missing).
#
#   scripts/package.sh            release build: what ships
#   scripts/package.sh --dev      from the dev profile's binaries: what CI
#                                 installs and runs (scripts/package-check.sh)
#                                 without a second, optimised build
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
[ "${1:-}" = --dev ] && profile=dev

if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb"
  cargo install cargo-deb --locked --version ^3
fi

# The relay ships without the demo fleet (dwa-sim); the agent as it is.
for pkg in dwa-relay dwa-agent; do
  cargo deb -p "$pkg" --profile "$profile"
done
ls -l target/debian/*.deb
