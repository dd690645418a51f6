#!/usr/bin/env bash
# Runs the product. Today that is the native engine answering a chat prompt with the default model
# (SmolLM2-135M-Instruct, fetched and cached on first use); the browser extension comes next.
# usage: scripts/run.sh [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-models.sh >/dev/null
cargo build --release -q --bin qwglm
exec target/release/qwglm run -m smollm2 --greedy --max-tokens 128 -p "${1:-What is the capital of France? Answer in one sentence.}"
