#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repo root, with .gl .llama .bench carried (see prepare.sh)
# and the release binary at .bench/qwglm. Builds llama.cpp's llama-bench (Vulkan) unless a carried
# .llama/llama-bench.xz exists, makes the synthetic GGUFs of ../shared/bench, then benchmarks
# llama.cpp and qwglm on the same card and files, printing one JSON line per measurement (prefix
# "RESULT ") for docs/PERF.md. Env: MODELS (default "q05 l8"), WHICH (default "llama qwglm"),
# QWGLM_BINS (default ".bench/qwglm"), REPS (default 3).
set -uo pipefail
OUT=${OUT:-/tmp/qwglm-bench-out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
MODELS=${MODELS:-q05 l8}
WHICH=${WHICH:-llama qwglm}
QWGLM_BINS=${QWGLM_BINS:-.bench/qwglm}
REPS=${REPS:-3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU /'

make_models() {
  pip install -q --no-deps .bench/gguf-0.19.0-py3-none-any.whl 2>/dev/null || true
  for m in $MODELS; do
    case $m in
      q05) [ -f /tmp/q05.gguf ] || python3 .bench/make_synth_gguf.py --spec .bench/qwen2.5-coder-0.5b-q4_k_m.spec.json.gz \
             --out /tmp/q05.gguf --wheel .bench/gguf-0.19.0-py3-none-any.whl >/dev/null ;;
      l8) [ -f /tmp/l8.gguf ] || python3 .bench/make_synth_gguf.py --preset llama3-8b --mix q4_k_m \
             --tokenizer-spec .bench/qwen2.5-coder-0.5b-q4_k_m.spec.json.gz --out /tmp/l8.gguf \
             --wheel .bench/gguf-0.19.0-py3-none-any.whl >/dev/null ;;
    esac
  done
}

build_llama() {
  if [ -f .llama/llama-bench.xz ]; then xz -dc .llama/llama-bench.xz > /tmp/llama-bench; chmod +x /tmp/llama-bench; return; fi
  local vk=/tmp/vkdev src=/tmp/llama-src
  mkdir -p $vk $src
  for f in .llama/*.deb; do dpkg -x "$f" $vk; done
  tar xJf .llama/llama-src.tar.xz -C $src
  local glslc=$vk/usr/bin/glslc
  if ls .llama/trixie-glslc/*.deb > /dev/null 2>&1; then
    # trixie's glslc knows the cooperative-matrix extensions (prepare.sh); it runs on its own glibc.
    local tx=/tmp/txglslc
    mkdir -p $tx
    for f in .llama/trixie-glslc/*.deb; do dpkg -x "$f" $tx; done
    printf '#!/bin/sh\nexec %s/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path %s/usr/lib/x86_64-linux-gnu %s/usr/bin/glslc "$@"\n' $tx $tx $tx > $tx/glslc
    chmod +x $tx/glslc
    glslc=$tx/glslc
  fi
  export LD_LIBRARY_PATH=$vk/usr/lib/x86_64-linux-gnu
  ln -sf /usr/lib/x86_64-linux-gnu/libvulkan.so.1 $vk/usr/lib/x86_64-linux-gnu/libvulkan.so
  cmake -S $src/llama.cpp -B /tmp/lbuild -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=$vk/usr \
    -DGGML_VULKAN=ON -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DVulkan_INCLUDE_DIR=$vk/usr/include -DVulkan_LIBRARY=$vk/usr/lib/x86_64-linux-gnu/libvulkan.so \
    -DVulkan_GLSLC_EXECUTABLE=$glslc > /tmp/lbuild.log 2>&1 || { tail -30 /tmp/lbuild.log; return 1; }
  grep -i "cooperative_matrix" /tmp/lbuild.log
  cmake --build /tmp/lbuild --target llama-bench -j "$(nproc)" >> /tmp/lbuild.log 2>&1 || { tail -40 /tmp/lbuild.log; return 1; }
  cp /tmp/lbuild/bin/llama-bench /tmp/llama-bench
  xz -T0 -c /tmp/llama-bench > "$OUT/llama-bench.xz"
}

case " $WHICH " in *" llama "*) build_llama & llama_pid=$! ;; esac
make_models
[ -n "${llama_pid:-}" ] && { wait $llama_pid || echo "llama-bench build failed"; }

for m in $MODELS; do
  f=/tmp/$m.gguf
  case " $WHICH " in *" llama "*)
    [ -x /tmp/llama-bench ] && /tmp/llama-bench -m $f -ngl 99 -p 512 -n 128 -r "$REPS" -fa 0,1 -o jsonl 2>/dev/null \
      | sed "s/^/RESULT llama.cpp $m /" ;;
  esac
  case " $WHICH " in *" qwglm "*)
    for b in $QWGLM_BINS; do
      "$b" bench -m $f --backend wgpu --prompt-tokens 512 --gen-tokens 128 --chunk 512 --repeat "$REPS" --json 2>&1 \
        | sed "s|^|RESULT $(basename $b) $m |"
      # llama-bench's tg128 decodes 128 tokens from an empty context; this line does the same (the
      # one above decodes after the 512-token prompt, with up to 640 keys of attention per token).
      "$b" bench -m $f --backend wgpu --prompt-tokens 1 --gen-tokens 128 --repeat "$REPS" --json 2>&1 \
        | sed "s|^|RESULT $(basename $b)-tg0 $m |"
      if [ -n "${KERNEL_TIMES:-}" ]; then
        QWGLM_KERNEL_TIMES=1 "$b" bench -m $f --backend wgpu --prompt-tokens 512 --gen-tokens 128 --chunk 512 2>&1 | tail -60
      fi
    done ;;
  esac
done
