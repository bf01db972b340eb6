#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs the system
# packages the tests need when they are missing (as root, with apt-get), or
# says exactly what to install; then formatting, lints, unit and
# integration tests (which build the plugins and the test-only plugins).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package
need=(
  "curl:curl"
  "wget:wget"
  "git:git"
  "perl:perl"
  "python3:python3"
  "php-cgi:php-cgi"
  "systemd-analyze:systemd"
  "dpkg-deb:dpkg"
  "ab:apache2-utils"
  "wrk:wrk"
  "openssl:openssl"
  "haproxy:haproxy"
  "gunicorn:gunicorn"
  "nginx:nginx-light"
  "nghttp:nghttp2-client"
  "h2load:nghttp2-client"
  "chromium:chromium"
  "pebble:pebble"
  "pebble-challtestsrv:pebble"
)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
# Python modules: the conf.d schema is checked as an editor would.
python3 -c 'import jsonschema' 2>/dev/null || missing+=("python3-jsonschema")
python3 -c 'import yaml' 2>/dev/null || missing+=("python3-yaml")
# The WebSocket relay test (Debian's python3, where the module goes).
python3 -c 'import websockets' 2>/dev/null || /usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=("python3-websockets")
# php-fpm is versioned (/usr/sbin/php-fpm8.2): the fastcgi tests run it.
compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=("php-fpm")
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need these Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Each suite's time goes to the closing summary (CI must stay under 25 min).
timings=()
t0=$SECONDS
lap() { timings+=("$1 $((SECONDS - t0))s"); t0=$SECONDS; }

cargo fmt --all -- --check
# The module graphs are acyclic (docs/ARCHITECTURE.md gives the layers).
for src in server/src sdk/src plugins/*/src; do
  python3 scripts/modcycles.py "$src" >/dev/null || { python3 scripts/modcycles.py "$src"; exit 1; }
done
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The SDK's rustdoc is the plugin authors' guide: it must build clean.
RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p tamada-sdk --no-deps --all-features
# ...and as the README says to build it, with no feature.
cargo doc --quiet -p tamada-sdk --no-deps
lap "fmt+clippy+doc"
# The plugin template is a project of its own (not a workspace member):
# build it into the test plugins' target folder, as its test does.
cargo build --quiet --manifest-path examples/hello-plugin/Cargo.toml --target-dir target/testplugins
# The SDK stands on its own: it packages, and the template builds and
# passes its tests against a copy of it outside this repository.
cargo package --quiet -p tamada-sdk --allow-dirty --target-dir target/package-check
outside=$(mktemp -d)
cp -r sdk "$outside/tamada-sdk"
cp -r examples/hello-plugin "$outside/hello-plugin"
rm -rf "$outside/hello-plugin/target"
sed -i 's#path = "../../sdk"#path = "../tamada-sdk"#' "$outside/hello-plugin/Cargo.toml"
cargo test --quiet --manifest-path "$outside/hello-plugin/Cargo.toml" --target-dir target/testplugins >/dev/null
rm -rf "$outside"
lap "sdk-package+template"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-features 2>&1 | tee "$log"
lap "cargo-test"
# Every parser of untrusted bytes under the fuzzer for a little while: a
# target that no longer builds, or an input that crashes one, fails here.
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
lap "fuzz"
# The Debian package: built, installed, served from, purged (as root; else
# built and its contents checked).
bash scripts/package-test.sh
lap "package-test"
# Two instances behind HAProxy: spread, real client addresses, no failed
# request through an upgrade and a stop.
bash scripts/lb-demo.sh target/debug/tamada target/debug
lap "lb-demo"
echo "suite times: ${timings[*]}"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
