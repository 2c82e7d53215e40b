#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every in-process and vfio-user benchmark in one go, each against its floor in the
# same process, and writes
#   artifacts/bench/summary.json   every figure: median, floor, ratio (and the machine)
#   artifacts/bench/scaling.png    the cost of one more region as an enclave's regions grow
# The figures in BENCHMARKS.md come from this command. Plotting uses matplotlib from PyPI,
# installed once into $NE_CACHE/bench-venv (default ~/.cache/ne). Quiet machines give
# comparable ratios; compare ratios, not absolute times, across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
out=artifacts/bench
mkdir -p "$out"
rm -rf target/criterion

echo "[bench] criterion: in process (SLOT_INFO, the sample lifecycle, a crash among four)" >&2
cargo bench --quiet -p ne-driver --features inproc --bench request --bench lifecycle --bench events >&2
echo "[bench] criterion: vfio-user (a 4-byte read, one command, the sample lifecycle)" >&2
cargo bench --quiet -p ne-vfio-user --bench wire >&2
echo "[bench] scaling: the driver's region adds, the device's SLOT_ADD_MEM up to 1 M regions" >&2
cargo bench --quiet -p ne-driver --features inproc --bench regions >"$out/regions.json"
cargo bench --quiet -p ne-device --features test-utils --bench slot_scaling >"$out/slot_scaling.json"

venv=${NE_CACHE:-$HOME/.cache/ne}/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "[bench] installing matplotlib into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet matplotlib
fi
"$venv/bin/python" scripts/bench-summary.py target/criterion "$out"
echo "[bench] wrote $out/summary.json and $out/scaling.png" >&2
