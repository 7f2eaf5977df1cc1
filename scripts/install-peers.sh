#!/usr/bin/env bash
# Install the peers tests/test_peers.py runs against that are not on PyPI: swaks, Postfix,
# curl and nginx's mail proxy (Debian packages; the Postfix tests also need root).  Postfix is
# installed unconfigured ("No configuration"), and nginx's own service is stopped and disabled
# if its package started it: nothing listens on port 25 or 80; the tests start instances of
# their own on ephemeral ports of 127.0.0.1.
# Without these programs the peer tests are skipped, each saying what is missing.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
mail_module=/usr/lib/nginx/modules/ngx_mail_module.so
if have swaks && have postfix && have smtp-source && have smtp-sink && have curl && have nginx && [ -e "$mail_module" ]; then
  echo "swaks, Postfix, curl and nginx (with its mail module) are installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install swaks, Postfix (with smtp-source and smtp-sink), curl and nginx (with its mail" \
    "module) with this system's packages" >&2
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
  swaks libnet-ssleay-perl postfix curl nginx-light libnginx-mod-mail
# The tests run nginx themselves; a machine that starts services on installation started its own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
else
  "${sudo[@]}" service nginx stop >/dev/null 2>&1 || true
fi
