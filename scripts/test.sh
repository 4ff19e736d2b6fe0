#!/usr/bin/env bash
# Runs every test of the workspace. Installs the test peers first when they
# are missing (Debian packages): OpenSSH client and server.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing test peers: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The end-to-end tests start the real binaries; build them once up front.
cargo build --bins -p dwa-relay -p dwa-agent
cargo test --workspace "$@"
