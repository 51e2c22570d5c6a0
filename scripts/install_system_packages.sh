#!/usr/bin/env bash
# Debian packages the tests use as independent peers: kcat (a Kafka client that is not ours), promtool
# (from the prometheus package, to lint /metrics), openssl (the CA and broker certificate of the SASL_SSL tests)
# and a headless browser for the operator page (chromium and chromium-driver, driven by Selenium). Java and Maven
# are expected on the machine already.
# `install_system_packages.sh demo`: only what `make demo` shows (Kafka's Java and Maven, the Prometheus server).
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # its server: make demo's live Prometheus
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${1:-}" != "demo" ]; then
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
