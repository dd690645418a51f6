#!/usr/bin/env bash
# Prepares, on this (networked) machine, everything the GPU benchmark needs on the lent GPU machine,
# which reaches nothing: the Vulkan loader (.gl), llama.cpp's sources with glslc + Vulkan/SPIR-V
# headers new enough for it (.llama), and the synthetic-GGUF generator (.bench). All three are
# git-ignored; pass them as `carry` to the device run together with the release `qwglm` binary.
#   usage: bash scripts/gpu-bench/prepare.sh        then on the device: bash scripts/gpu-bench/device.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in .gl .llama .bench; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
mkdir -p .gl .llama .bench /tmp/qwglm-apt/bookworm/partial /tmp/qwglm-apt/trixie/partial
bookworm=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/qwglm-apt/bookworm)
echo "deb [trusted=yes] http://deb.debian.org/debian trixie main" > /tmp/qwglm-apt/trixie.list
trixie=(-oAPT::Architecture=amd64 -oDir::Etc::SourceList=/tmp/qwglm-apt/trixie.list -oDir::Etc::SourceParts=/dev/null
        -oDir::State::Lists=/tmp/qwglm-apt/trixie)
apt-get "${bookworm[@]}" update -qq
apt-get "${trixie[@]}" update -qq
# The device has the NVIDIA driver but no libvulkan (its ICD, libGLX_nvidia, needs libglvnd); glslc from bookworm runs on older glibc too.
(cd .gl && apt-get "${bookworm[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
(cd .llama && apt-get "${bookworm[@]}" download glslc libshaderc1)
# llama.cpp (pinned by llama-cpp-python 0.3.36) needs Vulkan headers >= 1.3.275 and SPIR-V headers.
(cd .llama && apt-get "${trixie[@]}" download libvulkan-dev spirv-headers)
# ...and, for its tensor-core shaders (GL_KHR_cooperative_matrix, GL_NV_cooperative_matrix2), a glslc
# newer than bookworm's 2023.2: trixie's 2025.2, run through trixie's own loader and libraries
# (device.sh writes the wrapper), since it needs a newer glibc than bookworm's. Without it
# llama-bench multiplies without tensor cores (docs/PERF.md pass 9: prefill 2-4.6x lower).
mkdir -p .llama/trixie-glslc
(cd .llama/trixie-glslc && apt-get "${trixie[@]}" download glslc libshaderc1 libc6 libstdc++6 libgcc-s1)
if [ ! -f .llama/llama-src.tar.xz ]; then
  tmp=$(mktemp -d)
  # The sdist straight from the index (`pip download` of it would build its metadata, which
  # compiles cmake from source on a fresh machine).
  url=$(curl -fsS https://pypi.org/simple/llama-cpp-python/ | grep -o 'https://[^"#]*llama_cpp_python-0.3.36.tar.gz' | head -1)
  curl -fsSL "$url" -o "$tmp"/llama_cpp_python-0.3.36.tar.gz
  tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
  src="$tmp/llama_cpp_python-0.3.36/vendor/llama.cpp"
  # Only what a Vulkan llama-bench build configures: drop docs, models, other backends.
  rm -rf "$src"/{docs,models,benches,media,pocs,conversion,skills,gguf-py,tests,tools/ui}
  for b in hexagon sycl opencl cann musa hip metal openvino zdnn zendnn et virtgpu webgpu; do rm -rf "$src/ggml/src/ggml-$b"; done
  tar cJf .llama/llama-src.tar.xz -C "$tmp/llama_cpp_python-0.3.36/vendor" llama.cpp
  rm -rf "$tmp"
fi
cp ../shared/bench/make_synth_gguf.py ../shared/bench/qwen2.5-coder-0.5b-q4_k_m.spec.json.gz .bench/
pip download --no-deps gguf==0.19.0 -d .bench
du -sh .gl .llama .bench
