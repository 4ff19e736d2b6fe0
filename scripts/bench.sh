#!/usr/bin/env bash
# Builds the relay, the agent and the bench in release mode, then runs a
# benchmark, all on loopback. Arguments go to the bench:
#   scripts/bench.sh [options]        tunnel bench: direct TCP vs DWA tunnel
#                                     (dwa-relay forward) vs OpenSSH ssh -L,
#                                     e.g. --size-mib 256 --rtt-count 5000
#   scripts/bench.sh web [options]    web-session bench: a simulated printer's
#                                     web server direct vs a DWA web session vs
#                                     OpenSSH ssh -R, e.g. --size-mib 256 --sessions 20
#   scripts/bench.sh --help           every option
# The OpenSSH reference needs: apt-get install -y openssh-server openssh-client
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dwa-relay -p dwa-agent -p dwa-bench --bins
exec "${CARGO_TARGET_DIR:-target}/release/bench" "$@"
