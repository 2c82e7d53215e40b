#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The figures of BENCHMARKS.md "A guest of nectl serve", in one run: NE_START_ENCLAVE →
# heartbeat, and vsock throughput to the enclave in 64 KiB writes, measured on the embedded
# default and then in the e2e suite's second guest (the unmodified driver, its own vsock),
# on the same hello image with the same release build. As root (the e2e suite's guest);
# JSON in artifacts/bench/, medians and ratios printed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=artifacts/bench
mkdir -p "$out"
eif=$(scripts/build-hello.sh)
cargo build --quiet --locked --release -p ne-cli
nectl=target/release/nectl
echo "[bench] the embedded default"
"$nectl" bench heartbeat --eif-path "$eif" --runs 5 --cpu-count 2 --memory 256 \
    2>/dev/null >"$out/heartbeat-embedded.json"
ran=$("$nectl" run-enclave --eif-path "$eif" --cpu-count 2 --memory 256 --enclave-name bench)
cid=$(echo "$ran" | sed -n 's/.*"EnclaveCID": *\([0-9]*\).*/\1/p')
for _ in $(seq 20); do  # the application listens just after the heartbeat
    echo ping | "$nectl" connect --enclave-cid "$cid" --port 5005 2>/dev/null | grep -q hello && break
    sleep 0.5
done
"$nectl" bench vsock --enclave-cid "$cid" --runs 5 >"$out/vsock-embedded.json"
"$nectl" parent stop >/dev/null
echo "[bench] a guest of nectl serve"
NE_E2E_BENCH=$PWD/$out/guest.jsonl tests/e2e/run.sh >"$out/e2e.log" 2>&1 || {
    tail -20 "$out/e2e.log"; exit 1; }
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
guest = [json.loads(line) for line in open(f"{out}/guest.jsonl") if line.strip()]
heartbeat = {"embedded": json.load(open(f"{out}/heartbeat-embedded.json")),
             "guest": next(g for g in guest if g["Benchmark"].startswith("heartbeat"))}
vsock = {"embedded": json.load(open(f"{out}/vsock-embedded.json")),
         "guest": next(g for g in guest if g["Benchmark"].startswith("vsock"))}
for side in ("embedded", "guest"):
    h = heartbeat[side]["StartToHeartbeat"]
    v = vsock[side]
    print(f"{side:9} heartbeat median {h['MedianMs']} ms (max {h['MaxMs']}, {h['Runs']} runs); "
          f"vsock median {v['MedianMBps']} MB/s (min {v['MinMBps']}, {v['Runs']} runs)")
ratio = heartbeat["guest"]["StartToHeartbeat"]["MedianMs"] / heartbeat["embedded"]["StartToHeartbeat"]["MedianMs"]
print(f"guest / embedded: heartbeat {ratio:.3f}; vsock "
      f"{vsock['guest']['MedianMBps'] / vsock['embedded']['MedianMBps']:.3f}")
PY
