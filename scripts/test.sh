#!/usr/bin/env bash
# Runs every test of the workspace. Installs the test peers first when they
# are missing (Debian packages): OpenSSH client and server, net-snmp,
# dnsmasq, Samba's nmblookup and nmbd.
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

# SNMP simulator for agent/tests/scan_snmpsim.rs (those tests skip without
# it): snmpsim in a venv outside /root (it drops to nobody), and net-snmp's
# tools for cross-checking by hand.
if [ ! -x /opt/snmpsim/bin/snmpsim-command-responder ]; then
  echo "installing snmpsim into /opt/snmpsim"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! { $sudo /usr/bin/python3 -m venv /opt/snmpsim &&
    $sudo /opt/snmpsim/bin/pip install -q snmpsim pysmi; }; then
    echo "WARNING: snmpsim install failed; the snmpsim scan tests will skip" >&2
  fi
fi
# SMTP server for tests/tests/alerts_email.rs (it skips without it):
# aiosmtpd in a venv, started by the test on a loopback port with STARTTLS.
if [ ! -x /opt/aiosmtpd/bin/python ] || ! /opt/aiosmtpd/bin/python -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd into /opt/aiosmtpd"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! { $sudo /usr/bin/python3 -m venv /opt/aiosmtpd &&
    $sudo /opt/aiosmtpd/bin/pip install -q aiosmtpd; }; then
    echo "WARNING: aiosmtpd install failed; the e-mail alerts test will skip" >&2
  fi
fi
if ! command -v snmpget >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing net-snmp tools (snmp)"
  if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends snmp; }; then
    echo "WARNING: installing the snmp package failed; the traps test will skip" >&2
  fi
fi
# net-snmp's agent for agent/tests/scan_snmpv3.rs (those tests skip without
# it). The tests start their own snmpd on loopback; the package's service
# is not needed (installing it may start one on UDP 161).
if [ ! -x /usr/sbin/snmpd ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing net-snmp agent (snmpd)"
  if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends snmpd; }; then
    echo "WARNING: installing the snmpd package failed; the SNMPv3 scan tests will skip" >&2
  fi
fi

# Peers of the names and traps tests (agent/tests/names_dns_netbios.rs,
# agent/tests/traps_snmptrap.rs; they skip without them): dnsmasq's binary
# only (dnsmasq-base: no service), Samba's nmblookup and nmbd, net-snmp's
# snmptrap/snmpinform (the snmp package, above). The tests start their own
# dnsmasq and nmbd on loopback; Samba's own services must not start on
# install (nmbd would hold UDP 137/138 on every address), so a machine
# without a policy-rc.d gets one for the install only.
# Installs Debian packages whose services must not start (they would hold
# ports the tests use): a machine without a policy-rc.d gets one that
# refuses every start, for the install only. A failed install warns:
# `$1` says which tests then skip.
install_without_services() {
  local skips=$1 sudo="" added_policy=""
  shift
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing test peers: $*"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"; }; then
    echo "WARNING: installing $* failed; $skips" >&2
  fi
  [ -z "$added_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
}

need=()
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -x /usr/bin/nmblookup ] || need+=(samba-common-bin)
[ -x /usr/sbin/nmbd ] || need+=(samba)
if ((${#need[@]})); then
  install_without_services "the names tests will skip" "${need[@]}"
fi

# Prometheus and promtool for tests/tests/ops_metrics.rs (those checks
# skip without them): the test starts its own Prometheus on a loopback
# port; the package's service must not start on install (it would scrape
# and listen on :9090), so a policy-rc.d is put in place for the install.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  install_without_services "the Prometheus checks of ops_metrics will skip" prometheus
fi

# Headless Chromium and its WebDriver for the portal tests
# (tests/tests/portal_*.rs), and OpenSSL: the agent's legacy-TLS connector
# links libssl, and the legacy-printer tests start `openssl s_server`.
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# A real OpenID Connect provider (npm oidc-provider) for the single-sign-on
# tests, installed from the committed lock file.
if [ -f tests/oidc/package-lock.json ] && [ ! -d tests/oidc/node_modules ]; then
  echo "installing the test OIDC provider (npm ci in tests/oidc)"
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi

# The end-to-end tests start the real binaries; build them once up front,
# and tell the test processes so (each would otherwise run cargo again,
# and rebuild from a tree edited since).
cargo build --bins -p dwa-relay -p dwa-agent
export DWA_TEST_BINS_BUILT=1
cargo test --workspace "$@"

# The Debian packages (docs/operations.md): built from the dev binaries
# above, installed with dpkg, run as their units would, then purged. Not
# with --no-run (a build only), nor when DWA_SKIP_PACKAGES=1 (a local run
# that must not install packages); CI runs it.
case " $* " in *" --no-run "*) exit 0 ;; esac
if [ "${DWA_SKIP_PACKAGES:-}" = 1 ]; then
  echo "DWA_SKIP_PACKAGES=1: the package check is skipped"
  exit 0
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing systemd (systemd-analyze)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd
fi
scripts/package.sh --dev
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
$sudo scripts/package-check.sh
