#!/usr/bin/env bash
# Runs every test: installs prerequisites, fetches the pinned real models (cached), then the Rust
# suites (unit, format, tokenizer, template, sampling, kernel parity on lavapipe, tiny and real
# model parity), the wasm32 build of the engine, its kernels on WebGPU in headless Chromium
# (wasm-bindgen-test, engine/tests/web_kernel.rs) and the extension's browser tests (headless
# Chromium, `cargo xtask test-browser`). Ends with one "N passed, M failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-models.sh
cargo build -p engine --target wasm32-unknown-unknown
cargo build -p qwglm-sim --target wasm32-unknown-unknown
mkdir -p target
log=target/test-output.log
: >"$log"
set +e
# The engine's kernels on the browser's WebGPU (headless Chromium, SwiftShader) against RefDevice in
# the same wasm (engine/tests/web_kernel.rs; browser flags in engine/webdriver.json). The runner
# prints a cargo-style "test result:" line; if it dies before that, print a failing one ourselves.
web_log=target/test-output-web.log
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-900} \
  WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/engine/webdriver.json" \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p engine --target wasm32-unknown-unknown --test web_kernel 2>&1 | tee "$web_log"
web=${PIPESTATUS[0]}
if [ "$web" -ne 0 ] && ! grep -q '^test result:' "$web_log"; then
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out (web_kernel did not run)" | tee -a "$web_log"
fi
cat "$web_log" >>"$log"
cargo test --workspace 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$web
# The browser checks print a cargo-style "test result:" line, so they count in the total below.
cargo xtask test-browser 2>&1 | tee -a "$log"
browser=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$browser
set -e
# cargo's last line is a crate's empty doc-test run ("0 passed"); print the whole suite's total.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
