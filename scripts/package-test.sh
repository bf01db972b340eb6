#!/usr/bin/env bash
# The Debian package, end to end, as root on this machine (no systemd
# needed): build it with cargo-deb, install it with dpkg, start the
# installed binary as the unit would, fetch the welcome page, check the
# access log and who serves it, check the unit with systemd-analyze, then
# purge and check that only the logs stay. Not root: build the package and
# check its contents only.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo build --release --workspace --quiet
rm -rf target/debian
cargo deb -p tamada --no-build --strip --quiet -o target/debian/ >/dev/null
deb=$(ls target/debian/tamada_*.deb)
contents=$(dpkg-deb -c "$deb")
for f in ./usr/sbin/tamada ./usr/lib/tamada/plugins/libtamada_static.so \
         ./etc/tamada/conf.d/default.yaml ./var/www/tamada/index.html \
         ./etc/logrotate.d/tamada ./lib/systemd/system/tamada.service \
         ./usr/share/man/man8/tamada.8.gz ./usr/share/tamada/tamada.schema.json; do
  grep -q " $f\$" <<<"$contents" || { echo "package: $f is missing" >&2; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q adduser
if [ "$(id -u)" != 0 ]; then
  echo "package: built and checked $deb (install test needs root)"
  exit 0
fi

cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  dpkg --purge tamada >/dev/null 2>&1 || true
}
trap cleanup EXIT
dpkg --purge tamada >/dev/null 2>&1 || true
# What an earlier run or a real installation left in the logs stays:
# the checks below compare with it, and only a folder this run made goes.
logs_before=$([ -d /var/log/tamada ] && echo yes || true)
state_before=$([ -d /var/lib/tamada ] && echo yes || true)
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
getent passwd tamada >/dev/null || { echo "package: no tamada user" >&2; exit 1; }
[ "$(stat -c %U /var/log/tamada)" = tamada ] || { echo "package: /var/log/tamada is not tamada's" >&2; exit 1; }
[ "$(stat -c %U:%G:%a /etc/tamada/tls)" = root:tamada:750 ] || { echo "package: /etc/tamada/tls is not root:tamada 0750" >&2; exit 1; }
# ACME's state_dir: the service user's, private.
[ "$(stat -c %U:%G:%a /var/lib/tamada/acme)" = tamada:tamada:700 ] || { echo "package: /var/lib/tamada/acme is not tamada:tamada 0700" >&2; exit 1; }
grep -q '^StateDirectory=tamada$' /lib/systemd/system/tamada.service || { echo "package: the unit has no StateDirectory=tamada" >&2; exit 1; }
if getent group ssl-cert >/dev/null && ! id -nG tamada | grep -qw ssl-cert; then
  echo "package: tamada is not in ssl-cert" >&2; exit 1
fi

# The unit, checked by systemd itself.
if ! command -v systemd-analyze >/dev/null && command -v apt-get >/dev/null; then
  apt-get install -y -qq systemd >/dev/null 2>&1 || true
fi
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify /lib/systemd/system/tamada.service 2>&1 || true)
  if grep -i "tamada.service" <<<"$out" | grep -vi "network-online" | grep -q .; then
    echo "package: systemd-analyze verify: $out" >&2; exit 1
  fi
fi

# A free port instead of 80: the package test must not meet another server.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^port: 80$/port: $port/" /etc/tamada/conf.d/default.yaml
listing() { find /var/log/tamada -type f -printf '%p %s\n' 2>/dev/null | sort; }
before=$(listing)
/usr/sbin/tamada -t -c /etc/tamada/conf.d >/dev/null 2>&1
[ "$(listing)" = "$before" ] || { echo "package: -t created or wrote log files" >&2; exit 1; }
access=/var/log/tamada/default/access.log
lines_before=$( [ -f $access ] && wc -l < $access || echo 0)
/usr/sbin/tamada -c /etc/tamada/conf.d 2>/tmp/tamada-package.log &
pid=$!
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done
page=$(curl -s "http://127.0.0.1:$port/")
grep -q "Welcome to tamada" <<<"$page" || { echo "package: no welcome page: $page" >&2; exit 1; }
# The packaged site compresses (the compress plugin is in the package).
curl -s -D - -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/" | grep -qi '^content-encoding: gzip' \
  || { echo "package: the welcome page is not compressed" >&2; exit 1; }
grep -q "serving as user \`tamada\`" /tmp/tamada-package.log || { cat /tmp/tamada-package.log >&2; exit 1; }
for t in /proc/$pid/task/*; do
  uid=$(awk '/^Uid:/ {print $2}' "$t/status")
  [ "$uid" = "$(id -u tamada)" ] || { echo "package: thread $t serves as uid $uid" >&2; exit 1; }
done
kill -TERM "$pid"; wait "$pid" || true; pid=
tail -n +$((lines_before + 1)) $access | grep -q '"GET / HTTP/1.1" 200' \
  || { echo "package: no access log line" >&2; cat $access >&2; exit 1; }

dpkg --purge tamada >/dev/null
left=$(dpkg -L tamada 2>/dev/null || true)
for f in /usr/sbin/tamada /usr/lib/tamada /etc/tamada /var/www/tamada/index.html \
         /lib/systemd/system/tamada.service /etc/logrotate.d/tamada; do
  [ -e "$f" ] && { echo "package: $f left after purge" >&2; exit 1; }
done
[ -d /var/log/tamada ] || { echo "package: the logs went with the purge" >&2; exit 1; }
[ -n "$logs_before" ] || rm -rf /var/log/tamada
# ACME's account and certificates stay too (a reinstall orders nothing).
[ -d /var/lib/tamada/acme ] || { echo "package: ACME's folder went with the purge" >&2; exit 1; }
[ -n "$state_before" ] || rm -rf /var/lib/tamada
echo "package: $deb installs, serves as tamada, logs, and purges cleanly"
