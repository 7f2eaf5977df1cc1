#!/usr/bin/env bash
# Install the peers tests/test_peers.py runs against that are not on PyPI: swaks, Postfix and
# curl (Debian packages; the Postfix tests also need root).  Postfix is installed unconfigured
# ("No configuration"): the system's own instance stays stopped and nothing listens on
# port 25; the tests start instances of their own on ephemeral ports of 127.0.0.1.
# Without these programs the peer tests are skipped, each saying what is missing.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if have swaks && have postfix && have smtp-source && have smtp-sink && have curl; then
  echo "swaks, Postfix and curl are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install swaks, Postfix (with smtp-source and smtp-sink) and curl with this system's packages" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
"${sudo[@]}" apt-get update -qq
# libnet-ssleay-perl: swaks's TLS (only a recommendation of the swaks package).
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  swaks libnet-ssleay-perl postfix curl
