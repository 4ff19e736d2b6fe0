#!/usr/bin/env bash
# Installs the packages from target/debian with dpkg, checks the units with
# systemd-analyze verify, and runs the installed binaries as their units
# would (the unit's user, environment, command line, capabilities and
# no-new-privileges, through setpriv: CI has no systemd as PID 1). The relay
# serves on loopback, an agent enrolls with it and connects, both reload on
# SIGHUP and stop on SIGTERM. Purges the packages and their data at the end.
# Needs root (dpkg); run by scripts/test.sh after scripts/package.sh --dev.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "package-check: FAIL: $*" >&2
  for l in "${work:-/nonexistent}"/*.log; do
    [ -f "$l" ] && { echo "--- $l" >&2; tail -n 20 "$l" >&2; }
  done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
shopt -s nullglob
debs=(target/debian/dwa-relay_*.deb target/debian/dwa-agent_*.deb)
((${#debs[@]} == 2)) || fail "expected one dwa-relay and one dwa-agent .deb in target/debian (scripts/package.sh)"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  dpkg --purge dwa-relay dwa-agent >/dev/null 2>&1 || true
  rm -rf /var/lib/dwa-relay /var/lib/dwa-agent "$work"
}
trap cleanup EXIT
# A previous run's leftovers would make init refuse.
dpkg --purge dwa-relay dwa-agent >/dev/null 2>&1 || true
rm -rf /var/lib/dwa-relay /var/lib/dwa-agent

echo "== dpkg -i ${debs[*]}"
dpkg -i "${debs[@]}"

for p in relay agent; do
  unit=/lib/systemd/system/dwa-$p.service
  [ -f "$unit" ] || fail "$unit not installed"
  [ -x /usr/bin/dwa-$p ] || fail "/usr/bin/dwa-$p not installed"
  getent passwd dwa-$p >/dev/null || fail "user dwa-$p not created"
  [ "$(stat -c '%U %a' /var/lib/dwa-$p)" = "dwa-$p 700" ] ||
    fail "/var/lib/dwa-$p is $(stat -c '%U %a' /var/lib/dwa-$p), want dwa-$p 700"
  for want in ProtectSystem=strict NoNewPrivileges=true PrivateTmp=true \
    User=dwa-$p ReadWritePaths=/var/lib/dwa-$p; do
    grep -qx "$want" "$unit" || fail "$unit lacks $want"
  done
done
out=$(timeout 10 /usr/bin/dwa-relay --data-dir "$work/demo" demo 2>&1 </dev/null || true)
grep -q "built without the demo" <<<"$out" || fail "the packaged relay has the demo fleet built in: $out"

echo "== systemd-analyze verify"
out=$(systemd-analyze verify /lib/systemd/system/dwa-relay.service \
  /lib/systemd/system/dwa-agent.service 2>&1) || fail "systemd-analyze verify: $out"
# Warnings go to stderr with exit code 0: clean means no output at all.
[ -z "$out" ] || fail "systemd-analyze verify is not clean: $out"

# The unit's value of KEY (last assignment wins, as in systemd).
unit_get() { sed -n "s/^$2=//p" "$1" | tail -n1; }
# Runs the unit's ExecStart (or, with args, that binary with those args)
# as the unit would: its user and group, Environment=, UMask=, no new
# privileges, the bounding and ambient capability sets.
as_unit() {
  local unit=$1; shift
  local user caps envs=() e
  user=$(unit_get "$unit" User)
  caps=$(unit_get "$unit" AmbientCapabilities | tr 'A-Z' 'a-z' | sed 's/cap_//g; s/ /,+/g')
  while IFS= read -r e; do envs+=("$e"); done < <(sed -n 's/^Environment=//p' "$unit")
  local cmd
  if (($#)); then cmd=("$@"); else read -r -a cmd <<<"$(unit_get "$unit" ExecStart)"; fi
  local run=(setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs
    --bounding-set=-all,+"$caps" --inh-caps=+"$caps" --ambient-caps=+"$caps"
    env -i PATH=/usr/bin:/bin "${envs[@]}" "${cmd[@]}")
  if [ -n "${AS_UNIT_EXEC:-}" ]; then
    # Started in the background (`start_unit`): this subshell becomes the
    # service process, so $! is its pid.
    umask "$(unit_get "$unit" UMask)"
    exec "${run[@]}"
  fi
  (umask "$(unit_get "$unit" UMask)"; exec "${run[@]}")
}
start_unit() { AS_UNIT_EXEC=1 as_unit "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local n=$(($1 * 5)) what=$2; shift 2
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "timed out waiting for $what"
}

R=/lib/systemd/system/dwa-relay.service
A=/lib/systemd/system/dwa-agent.service
ssh_port=$(free_port)
https_port=$(free_port)

echo "== relay: init and serve as the unit"
as_unit "$R" /usr/bin/dwa-relay --json init --domain dwa.localhost \
  --ssh-listen 127.0.0.1:$ssh_port --https-listen 127.0.0.1:$https_port >"$work/init.json"
[ "$(stat -c %U /var/lib/dwa-relay/relay.toml)" = dwa-relay ] || fail "relay.toml not owned by dwa-relay"
start_unit "$R" >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
healthz() { curl -sfk "https://127.0.0.1:$https_port/healthz"; }
wait_for 20 "the relay's /healthz" healthz
[ "$(ps -o user= -p "$relay_pid")" = dwa-relay ] || fail "relay not running as dwa-relay"
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$relay_pid/status" || fail "relay runs without no_new_privs"

echo "== agent: enroll and run as the unit"
as_unit "$R" /usr/bin/dwa-relay --json customer add acme >/dev/null
token=$(as_unit "$R" /usr/bin/dwa-relay --json token create --customer acme --uses 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
printf '%s' "$token" | as_unit "$A" /usr/bin/dwa-agent --json enroll \
  --relay "https://127.0.0.1:$https_port" --token-file - \
  --config /var/lib/dwa-agent/agent.toml --transport ssh --allow 127.0.0.1/32 >/dev/null
start_unit "$A" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
connected() {
  as_unit "$A" /usr/bin/dwa-agent --json status >"$work/status.log" 2>&1 &&
    python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["status"]["link"]["state"] != "connected")' \
      <"$work/status.log"
}
wait_for 30 "the agent to connect" connected
[ "$(ps -o user= -p "$agent_pid")" = dwa-agent ] || fail "agent not running as dwa-agent"

echo "== SIGHUP: both reload and keep running"
kill -HUP "$relay_pid" "$agent_pid"
sleep 1
kill -0 "$relay_pid" || fail "relay exited on SIGHUP: $(tail -5 "$work/relay.log")"
kill -0 "$agent_pid" || fail "agent exited on SIGHUP: $(tail -5 "$work/agent.log")"
grep -q 'reload' "$work/relay.log" || fail "relay logged no reload"
grep -q 'reload' "$work/agent.log" || fail "agent logged no reload"
healthz >/dev/null || fail "relay not serving after SIGHUP"
wait_for 10 "the agent to stay connected after SIGHUP" connected

echo "== SIGTERM: both stop cleanly"
kill -TERM "$agent_pid" "$relay_pid"
wait "$agent_pid" || fail "agent exited $? on SIGTERM"
wait "$relay_pid" || fail "relay exited $? on SIGTERM"
pids=()

echo "== dpkg --purge"
dpkg --purge dwa-relay dwa-agent
[ ! -e /usr/bin/dwa-relay ] || fail "dwa-relay still installed after purge"
echo "package-check: ok"
