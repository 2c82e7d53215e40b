#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of the project: unit, integration, property and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-features --locked
