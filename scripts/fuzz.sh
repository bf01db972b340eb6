#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 20), one
# after the other: the parsers of bytes a client or an upstream controls
# (fuzz/Cargo.toml lists them). Needs the nightly toolchain and
# cargo-fuzz; installs cargo-fuzz from crates.io when it is missing.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# New inputs go to fuzz/work/TARGET (not committed), starting from the
# committed seeds in fuzz/corpus/TARGET; a crash stops the run, with its
# input in fuzz/artifacts/TARGET. The last line counts the executions.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi
cd fuzz
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O >/dev/null
total=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  log=$(mktemp)
  # -rss_limit_mb: a parser that swells on some input is a finding too.
  if ! cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: $t FAILED (input in fuzz/artifacts/$t)" >&2
    rm -f "$log"
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  echo "fuzz: $t: ${runs:-0} executions in ${secs}s, coverage ${cov:-?}, corpus $(ls "work/$t" | wc -l)"
  total=$((total + ${runs:-0}))
  rm -f "$log"
done
echo "fuzz: ${#targets[@]} targets, $total executions, no crash"
