#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of the project: unit, integration, property, end-to-end CLI and doc
# tests. Installs the few system packages they need first (see install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-features --locked
