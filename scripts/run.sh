#!/usr/bin/env bash
# Runs the product: the Chrome extension. Installs what is missing, fetches the default model
# (SmolLM2-135M-Instruct, sha256-checked, cached in ~/.cache/qwglm/models), builds the extension
# (cargo xtask dist) and starts Chromium with it loaded, the model served by a local Hub-layout
# server and downloaded (verified) into the extension's IndexedDB, and the chat open
# (cargo xtask run). Headless, the default without $DISPLAY, it asks PROMPT in the real popup,
# prints the streamed answer and exits.
# usage: scripts/run.sh [--headless|--headed] [--backend auto|webgpu|cpu|simulator] [--no-build] [PROMPT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch-models.sh >/dev/null
exec cargo xtask run "$@"
