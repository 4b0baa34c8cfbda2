#!/usr/bin/env bash
# Installs the Debian packages that the integration tests and benchmarks use:
# prometheus (the server, and promtool for backfilling test data and checking configs),
# chromium + chromium-driver (headless browser tests of the pages we serve) and
# docker-compose (validates docker-compose.yml with `config`; no Docker engine needed),
# postgresql (the store's tests start a throw-away cluster with its initdb/pg_ctl),
# redis-server (the broker of the scale-out tests) and nodejs + npm (the real-client
# tier runs the Grafana plugin's own sources in Node).
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# initdb and pg_ctl are not on PATH on Debian: they live in /usr/lib/postgresql/<major>/bin
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-system-deps: need root to apt-get install ${need[*]}" >&2; exit 1
  fi
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
