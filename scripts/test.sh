#!/usr/bin/env bash
# Runs every test: installs prerequisites, fetches the pinned real models (cached), then the Rust
# suites (unit, format, tokenizer, template, sampling, tiny and real model parity) and the wasm32 build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-models.sh
cargo build -p engine --target wasm32-unknown-unknown
cargo test --workspace
