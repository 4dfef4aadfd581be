#!/usr/bin/env bash
# Installs the Debian packages the interop tests drive, only when missing.
set -euo pipefail
need=()
lean=()  # installed without their recommends
if [ "${1:-}" = "venv" ]; then  # Debian's own python3 needs python3-venv for `-m venv`
    need+=(python3-venv)
fi
if [ "${1:-}" = "bench" ]; then  # what the benchmarks compare with (call_relay.py)
    command -v rtpengine >/dev/null || lean+=(rtpengine-daemon)
fi
if [ "${1:-}" != "venv" ]; then
command -v sipp >/dev/null || need+=(sip-tester)
command -v baresip >/dev/null || need+=(baresip-core)
# a third SIP and media stack for the encrypted-call tests (liblinphone: belle-sip, mediastreamer2)
command -v linphonec >/dev/null || need+=(linphone-cli)
command -v sox >/dev/null || need+=(sox)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v openssl >/dev/null || need+=(openssl)
# Node.js runs the browser SIP library (JsSIP) against the WebSocket transport
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# the console's browser tests (Playwright drives Debian's chromium: no browser download)
command -v chromium >/dev/null || need+=(chromium)
# the tests use fail2ban-regex alone, to check deploy/fail2ban against the daemon's log
# (its recommends, a firewall among them, are left out)
command -v fail2ban-regex >/dev/null || lean+=(fail2ban)
ldconfig -p | grep -q 'libopus\.so\.0' || need+=(libopus0)  # Opus (opuslib-next loads it)
fi
[ ${#need[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]} ${lean[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
[ ${#need[@]} -eq 0 ] || $sudo apt-get install -y -q "${need[@]}"
[ ${#lean[@]} -eq 0 ] || $sudo apt-get install -y -q --no-install-recommends "${lean[@]}"
