#!/bin/sh
# Installs what the tests start for real: InfluxDB 1.6, VictoriaMetrics and
# Chromium (with its driver), and Prometheus for its metrics checker
# (promtool), from Debian's packages. Needs root (CI is root).
set -e
PKGS="influxdb victoria-metrics chromium chromium-driver prometheus"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages:$missing (run: sudo apt-get install$missing)" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts the packaged services; the tests run their own instances.
for s in influxdb victoria-metrics prometheus; do
  (systemctl stop "$s" || service "$s" stop) >/dev/null 2>&1 || true
done
