//! Acceptance 3: the engine's WGSL kernels through `WgpuDevice` on the browser's WebGPU (wasm32),
//! against the `RefDevice` oracle running the same ops in the same wasm module: the case list of
//! `kernel_cases/mod.rs` (the one the native wgpu and simulator tests use), seeded random inputs,
//! odd shapes, quantized mat-vecs included, compared by NMSE (Argmax exactly).
//!
//! Runs in headless Chromium with WebGPU on SwiftShader (`engine/webdriver.json` passes
//! `--enable-unsafe-webgpu`); scripts/test.sh runs it:
//!
//! ```sh
//! CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=600 \
//!   cargo test -p engine --target wasm32-unknown-unknown --test web_kernel
//! ```
//!
//! No WebGPU adapter is a FAILURE, never a skip.

#![cfg(all(target_arch = "wasm32", feature = "wgpu"))]

mod kernel_cases;

use engine::device::{Device, WgpuDevice};
use kernel_cases::Pair;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

async fn pair() -> Pair {
    let gpu = WgpuDevice::new(Default::default()).await.unwrap_or_else(|e| {
        panic!(
            "the browser kernel test needs a WebGPU adapter (headless Chromium: --enable-unsafe-webgpu, \
             see engine/webdriver.json): {e}"
        )
    });
    let info = gpu.info();
    assert_eq!(info.backend, "webgpu", "wasm32 WgpuDevice must run on the browser's WebGPU, got {}", gpu.describe());
    wasm_bindgen_test::console_log!("adapter: {}", gpu.describe());
    Pair::new(Box::new(gpu))
}

#[wasm_bindgen_test]
async fn matvec_every_format() {
    kernel_cases::matvec_every_format(pair().await).await;
}

#[wasm_bindgen_test]
async fn matmul_every_format() {
    kernel_cases::matmul_every_format(pair().await).await;
}

#[wasm_bindgen_test]
async fn embed_every_format() {
    kernel_cases::embed_every_format(pair().await).await;
}

#[wasm_bindgen_test]
async fn norms() {
    kernel_cases::norms(pair().await).await;
}

#[wasm_bindgen_test]
async fn rope_kv_write() {
    kernel_cases::rope_kv_write(pair().await).await;
}

#[wasm_bindgen_test]
async fn rope_attention_decode() {
    kernel_cases::rope_attention_decode(pair().await).await;
}

#[wasm_bindgen_test]
async fn swiglu_add() {
    kernel_cases::swiglu_add(pair().await).await;
}

#[wasm_bindgen_test]
async fn attention_decode() {
    kernel_cases::attention_decode(pair().await).await;
}

#[wasm_bindgen_test]
async fn attention_prefill() {
    kernel_cases::attention_prefill(pair().await).await;
}

#[wasm_bindgen_test]
async fn argmax_exact() {
    kernel_cases::argmax_exact(pair().await).await;
}

#[wasm_bindgen_test]
async fn multi_op_pass_and_bad_input() {
    kernel_cases::multi_op_pass_and_bad_input(pair().await).await;
}
