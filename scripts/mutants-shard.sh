#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One shard of the mutation tests of ne-device and ne-driver (see TESTING.md): fails when a
# mutant survives that is not listed, with its reason, in .cargo/mutants-survivors.txt.
#   MUTANTS_SHARD=k/n   the shard to run (default: the day of the year modulo 32, of 32),
#                       so that CI covers every mutant over a month, a few minutes a run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked --quiet cargo-mutants@27.1.0
shards=32
shard=${MUTANTS_SHARD:-$((10#$(date -u +%j) % shards))/$shards}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "mutants: shard $shard of ne-device and ne-driver"
status=0
# Without debug info every mutant links its test binaries in a fraction of the time.
CARGO_PROFILE_DEV_DEBUG=0 cargo mutants -p ne-device -p ne-driver --shard "$shard" --sharding round-robin \
    --jobs 2 --timeout 30 --no-shuffle -o "$out" >/dev/null || status=$?
# 0: all caught; 2: some missed; 3: some timed out (a hang is caught). Anything else failed.
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ] && [ "$status" -ne 3 ]; then
    echo "cargo mutants failed (exit $status)" >&2
    cat "$out/mutants.out/debug.log" >&2 || true
    exit 1
fi
# A survivor is named by file and mutation, without line and column, which move.
known() { sed -E 's/#.*//; s/[[:space:]]+$//; /^$/d' .cargo/mutants-survivors.txt; }
survivors=$(sed -E 's/^([^:]+):[0-9]+:[0-9]+:/\1:/' "$out/mutants.out/missed.txt")
new=$(grep -vxF -f <(known) <<<"$survivors" || true)
caught=$(wc -l <"$out/mutants.out/caught.txt")
missed=$(grep -c . <<<"$survivors" || true)
echo "mutants: $caught caught, $missed survived ($(grep -c . <<<"$new" || true) not known)"
if [ -n "$new" ]; then
    echo "Mutants no test caught (add a test, or list them with a reason):" >&2
    echo "$new" >&2
    exit 1
fi
