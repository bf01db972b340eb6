#!/usr/bin/env bash
# Two tamada instances behind HAProxy (examples/haproxy/haproxy.cfg), all on
# loopback: shows requests spread over both, the client's real address in
# each instance's access log, and no request failing while instance "a" is
# upgraded in place (SIGUSR2) and instance "b" is stopped (SIGTERM, lame
# duck) and started again, under a bounded wrk load.
#
#   bash scripts/lb-demo.sh [path/to/tamada [plugin-dir]]
#
# Needs haproxy, wrk and curl (Debian: apt-get install -y haproxy wrk curl).
# Exits non-zero if any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/tamada}")
plugins=$(realpath "${2:-$(dirname "$bin")}")
for cmd in haproxy wrk curl; do
  command -v "$cmd" >/dev/null || { echo "lb-demo: needs $cmd (apt-get install -y haproxy wrk curl)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*/tamada.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
front=$(free_port); pa=$(free_port); pb=$(free_port); stats=$(free_port)

# One document root both instances serve; logs per instance.
mkdir -p "$work/www"
echo "hello from the shared document root" >"$work/www/index.html"
for name in a b; do
  port=$pa; extra=""
  [ $name = b ] && { port=$pb; extra="proxy_protocol: true"; }
  mkdir -p "$work/$name/conf.d" "$work/$name/logs"
  cat >"$work/$name/conf.d/server.yaml" <<YAML
health: /healthz
lame_duck: 2s
shutdown_timeout: 5s
trusted_proxies: [127.0.0.1]
loops: 1
workers: 4
pid_file: ../tamada.pid
log_file: ../logs/error.log
YAML
  cat >"$work/$name/conf.d/site.yaml" <<YAML
vhost: localhost
ip: 127.0.0.1
port: $port
default: true
document_root: ../../www
log: ../logs
$extra
YAML
done

start() { # name
  "$bin" -c "$work/$1/conf.d" --plugin-dir "$plugins" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    [ -s "$work/$1/tamada.pid" ] && grep -q "tamada ready" "$work/$1/logs/error.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "lb-demo: tamada $1 did not start:" >&2; cat "$work/$1/logs/error.log" >&2; exit 1
}
state() { # server name -> UP / DOWN / ...
  curl -s "http://127.0.0.1:$stats/stats;csv" | awk -F, -v s="$1" '$1=="tamada" && $2==s { print $18 }'
}
wait_state() { # server state
  for _ in $(seq 100); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  echo "lb-demo: server $1 did not become $2 (is $(state "$1"))" >&2; exit 1
}
pid_of() { cat "$work/$1/tamada.pid"; }

start a; start b
sed -e "s/127.0.0.1:8080/127.0.0.1:$front/; s/127.0.0.1:8081/127.0.0.1:$pa/" \
    -e "s/127.0.0.1:8082/127.0.0.1:$pb/; s/127.0.0.1:8404/127.0.0.1:$stats/" \
    examples/haproxy/haproxy.cfg >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!)
wait_state a UP; wait_state b UP
echo "haproxy on 127.0.0.1:$front, tamada a on :$pa (X-Forwarded-For), b on :$pb (PROXY protocol v2): both UP"

# The client's address reaches both instances' access logs (curl from
# 127.0.0.5; HAProxy connects from 127.0.0.1).
for _ in 1 2 3 4; do
  curl -s --interface 127.0.0.5 -o /dev/null "http://127.0.0.1:$front/"
done
for name in a b; do
  for _ in $(seq 50); do grep -q '^127\.0\.0\.5 ' "$work/$name/logs/access.log" 2>/dev/null && break; sleep 0.1; done
  grep -q '^127\.0\.0\.5 ' "$work/$name/logs/access.log" \
    || { echo "lb-demo: $name did not log the client's address:" >&2; cat "$work/$name/logs/access.log" >&2; exit 1; }
done
echo "client 127.0.0.5 is in both access logs"

# The load: bounded in time; every response must be a 200.
wrk -t2 -c16 -d12s "http://127.0.0.1:$front/" >"$work/wrk.txt" 2>&1 &
load=$!
sleep 2
old_a=$(pid_of a)
echo "upgrading a in place (SIGUSR2 to $old_a)"
kill -USR2 "$old_a"
for _ in $(seq 100); do
  [ "$(pid_of a)" != "$old_a" ] && ! kill -0 "$old_a" 2>/dev/null && break
  sleep 0.1
done
[ "$(pid_of a)" != "$old_a" ] || { echo "lb-demo: the upgrade of a did not happen" >&2; exit 1; }
echo "a is now $(pid_of a); the old process has gone"
sleep 1
old_b=$(pid_of b)
echo "stopping b (SIGTERM to $old_b): its health route answers 503 for the lame duck"
kill -TERM "$old_b"
wait_state b DOWN
echo "HAProxy took b out; waiting for it to exit"
for _ in $(seq 100); do kill -0 "$old_b" 2>/dev/null || break; sleep 0.1; done
rm -f "$work/b/tamada.pid"
start b
wait_state b UP
echo "b started again and is back in rotation"
wait "$load"
cat "$work/wrk.txt"

total=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
failed=0
grep -q "Non-2xx" "$work/wrk.txt" && failed=1
grep -q "Socket errors" "$work/wrk.txt" && failed=1
a_lines=$(cat "$work/a/logs/access.log"* | wc -l)
b_lines=$(cat "$work/b/logs/access.log"* | wc -l)
echo "served by a: $a_lines, by b: $b_lines (of $total requests under load, plus the probes)"
if [ "$failed" = 1 ] || [ "$a_lines" -lt 10 ] || [ "$b_lines" -lt 10 ] || [ "${total:-0}" -lt 100 ]; then
  echo "lb-demo: FAILED (failed requests, or the load did not spread)" >&2
  tail -20 "$work/haproxy.log" >&2
  exit 1
fi
echo "lb-demo: no request failed"
