#!/usr/bin/env bash
# Builds the relay, the agent and the bench in release mode, then runs the
# benchmark (direct vs DWA tunnel vs OpenSSH ssh -L, all on loopback).
# Arguments go to the bench, e.g.: scripts/bench.sh --size-mib 256 --rtt-count 5000
# The OpenSSH reference needs: apt-get install -y openssh-server openssh-client
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p dwa-relay -p dwa-agent -p dwa-bench
exec target/release/bench "$@"
