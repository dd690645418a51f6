#!/usr/bin/env bash
# Runs every test: installs prerequisites, fetches the pinned real models (cached), then the Rust
# suites (unit, format, tokenizer, template, sampling, kernel parity on lavapipe, tiny and real
# model parity), the wasm32 build of the engine and the extension's browser tests (headless
# Chromium, `cargo xtask test-browser`). Ends with one "N passed, M failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-models.sh
cargo build -p engine --target wasm32-unknown-unknown
cargo build -p qwglm-sim --target wasm32-unknown-unknown
mkdir -p target
log=target/test-output.log
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The browser checks print a cargo-style "test result:" line, so they count in the total below.
cargo xtask test-browser 2>&1 | tee -a "$log"
browser=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$browser
set -e
# cargo's last line is a crate's empty doc-test run ("0 passed"); print the whole suite's total.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
