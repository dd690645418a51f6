#!/usr/bin/env bash
# Kernel A/B on the lent GPU machine (with .gl and .bench carried): `qwglm bench --synthetic` for
# each SHAPE x CFG, two interleaved rounds, one line each. CFG is BIN[:SHADER_DIR[:ENV=VALUE]]:
# .bench/qwglm.BIN, optionally with QWGLM_SHADER_DIR=.bench/SHADER_DIR (kernel files that replace
# the built-in ones) and one environment setting (e.g. `main::QWGLM_NO_TENSOR_CORES=1` for the
# f32 matmuls on a GPU with tensor cores). Env: SHAPES, CFGS, PP (prompt tokens, default 512),
# TG (default 128).
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for round in 1 2; do
  for shape in $SHAPES; do
    for cfg in $CFGS; do
      IFS=: read -r bin dir setting <<< "$cfg"
      env ${dir:+QWGLM_SHADER_DIR=$PWD/.bench/$dir} $setting .bench/qwglm.$bin bench --synthetic "$shape" --backend wgpu \
        --prompt-tokens "${PP:-512}" --gen-tokens "${TG:-128}" --repeat 2 -q --json 2>&1 | tail -1 \
        | python3 -c "import sys,json; d=json.loads(sys.stdin.read()); print('$round $shape $cfg', 'pp', round(d['prefill_tok_s']), 'tg', round(d['decode_tok_s'], 1))" \
        || echo "$round $shape $cfg failed"
    done
  done
done
