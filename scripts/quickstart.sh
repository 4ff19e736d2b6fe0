#!/usr/bin/env bash
# Runs the product on this machine: a relay (initialised on first use in
# ./dwa-data), an enrolled agent allowed to reach 127.20.1.0/24, and prints
# how to carry a connection through it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins -p dwa-relay -p dwa-agent
R=target/release/dwa-relay
A=target/release/dwa-agent
DATA=${DWA_DATA_DIR:-./dwa-data}
IP=127.20.0.1

if [ ! -f "$DATA/relay.toml" ]; then
  $R --data-dir "$DATA" init --ssh-listen $IP:2222 --https-listen $IP:8443
  $R --data-dir "$DATA" customer add demo
fi

$R --data-dir "$DATA" serve &
RELAY=$!
AGENT=""
cleanup() {
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null
  kill "$RELAY" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
sleep 1

if [ ! -f "$DATA/agent/agent.toml" ]; then
  TOKEN=$($R --data-dir "$DATA" --json token create --customer demo --uses 1 --ttl 10m |
    sed -E 's/.*"token":"([^"]+)".*/\1/')
  $A enroll --relay https://$IP:8443 --token "$TOKEN" --config "$DATA/agent/agent.toml" \
    --allow 127.20.1.0/24 --port 8080
fi
$A run --config "$DATA/agent/agent.toml" &
AGENT=$!
AGENT_ID=$(sed -nE 's/^agent_id = "(.*)"/\1/p' "$DATA/agent/agent.toml")
$R --data-dir "$DATA" device add --agent "$AGENT_ID" --address 127.20.1.10 >/dev/null 2>&1 || true

cat <<MSG

Relay and agent are running (agent $AGENT_ID). Try, in another terminal:
  python3 -m http.server 8080 --bind 127.20.1.10        # a "printer"
  $R --data-dir $DATA forward --agent $AGENT_ID --target 127.20.1.10:8080
  curl http://<the address it prints>/                  # carried relay -> SSH -> agent
  $R --data-dir $DATA audit                              # who did what
Ctrl-C stops everything.
MSG
wait
