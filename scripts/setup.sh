#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine of our kind (idempotent, quiet).
set -euo pipefail
need_apt=()
for cmd_pkg in unzip:unzip sha256sum:coreutils python3:python3 npm:npm; do
  command -v "${cmd_pkg%%:*}" >/dev/null || need_apt+=("${cmd_pkg##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The wgpu tests run on Mesa lavapipe (a Vulkan driver on the CPU) where no GPU exists.
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  SUDO=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# The extension's browser tests (cargo xtask test-browser) drive Debian's Chromium headless; the
# engine's browser kernel test (engine/tests/web_kernel.rs) drives it through chromedriver.
if ! dpkg -s chromium chromium-driver fonts-liberation >/dev/null 2>&1; then
  SUDO=$(command -v sudo >/dev/null && [ "$(id -u)" != 0 ] && echo sudo || true)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver fonts-liberation >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# wasm-bindgen-cli (wasm-bindgen, wasm-bindgen-test-runner) at exactly the wasm-bindgen version in
# Cargo.lock. No --locked: the CLI's own lockfile pins a webpki-roots release the registry no longer has.
wb=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' "$(dirname "$0")/../Cargo.lock")
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null)" != "wasm-bindgen-test-runner $wb" ] ||
   [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wb" ]; then
  cargo install -q wasm-bindgen-cli --version "$wb" --force
fi
