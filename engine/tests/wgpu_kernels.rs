//! Every `KernelId` on `WgpuDevice` against the `RefDevice` oracle: the cases of
//! `kernel_cases/mod.rs` (shared with the GPU simulator's tests).
//!
//! Needs a GPU adapter (CI: Mesa lavapipe). Without one the tests FAIL, never skip.
//! Run with `--nocapture` to see the NMSE of every case.

#![cfg(feature = "wgpu")]

mod kernel_cases;

use engine::device::{WgpuDevice, WgpuOptions};
use kernel_cases::Pair;

fn pair() -> Pair {
    pair_with(WgpuOptions::default())
}

fn pair_with(opts: WgpuOptions) -> Pair {
    let gpu = pollster::block_on(WgpuDevice::new(opts)).unwrap_or_else(|e| {
        panic!("the wgpu kernel tests need a GPU adapter (CI: apt-get install mesa-vulkan-drivers libvulkan1): {e}")
    });
    eprintln!("adapter: {}", gpu.describe());
    Pair::new(Box::new(gpu))
}

#[test]
fn embed_every_format() {
    pollster::block_on(kernel_cases::embed_every_format(pair()));
}

#[test]
fn matvec_every_format() {
    let pair = pair();
    assert!(pair.gpu.info().name.contains("planes matvecs"), "native devices run the planes matvecs: {}", pair.gpu.info().name);
    pollster::block_on(kernel_cases::matvec_every_format(pair));
}

/// The same cases on the f32 matvecs where the device would run planes variants (native
/// devices run matvec_planes_<format>.wgsl by default; the browser runs the f32 kernels).
#[test]
fn matvec_every_format_f32_only() {
    pollster::block_on(kernel_cases::matvec_every_format(pair_with(WgpuOptions { no_planes_matvecs: true, ..Default::default() })));
}

/// A norm / SwiGLU writing the planes of the row a planes matvec reads next (engine::shaders::pass_plans).
#[test]
fn planes_producer_passes() {
    pollster::block_on(kernel_cases::planes_producer_passes(pair()));
}

#[test]
fn top_k_exact() {
    pollster::block_on(kernel_cases::top_k_exact(pair()));
}

#[test]
fn matmul_every_format() {
    pollster::block_on(kernel_cases::matmul_every_format(pair()));
}

#[test]
fn norms() {
    pollster::block_on(kernel_cases::norms(pair()));
}

#[test]
fn rope_kv_write() {
    pollster::block_on(kernel_cases::rope_kv_write(pair()));
}

#[test]
fn rope_attention_decode() {
    pollster::block_on(kernel_cases::rope_attention_decode(pair()));
}

#[test]
fn swiglu_add() {
    pollster::block_on(kernel_cases::swiglu_add(pair()));
}

#[test]
fn attention_decode() {
    pollster::block_on(kernel_cases::attention_decode(pair()));
}

/// On `prefill_wide` (64-row workgroups), which every adapter with 24 KiB of workgroup memory runs
/// (lavapipe, the H200; not a browser at WebGPU's default limits).
#[test]
fn attention_prefill() {
    let pair = pair();
    assert!(pair.gpu.info().name.contains("wide prefill attention"), "{}", pair.gpu.info().name);
    pollster::block_on(kernel_cases::attention_prefill(pair));
}

/// The same cases on the 16-row `prefill` kernel (devices at WebGPU's default workgroup memory).
#[test]
fn attention_prefill_narrow() {
    let pair = pair_with(WgpuOptions { no_wide_attention: true, ..Default::default() });
    assert!(!pair.gpu.info().name.contains("wide prefill attention"), "{}", pair.gpu.info().name);
    pollster::block_on(kernel_cases::attention_prefill(pair));
}

#[test]
fn argmax_exact() {
    pollster::block_on(kernel_cases::argmax_exact(pair()));
}

#[test]
fn multi_op_pass_and_bad_input() {
    pollster::block_on(kernel_cases::multi_op_pass_and_bad_input(pair()));
}
