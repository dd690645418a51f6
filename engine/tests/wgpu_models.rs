//! End to end on `WgpuDevice`: the tiny random checkpoints (tests/fixtures/tiny) give logits within
//! 1e-4 of transformers and the same greedy ids, also with weights split by rows under a small
//! binding limit; the real SmolLM2-135M Q4_1 GGUF reproduces its 32 reference greedy ids, the real
//! Qwen2.5-Coder-0.5B GGUF its first 8 with every Q4_K / Q6_K matvec on the planes kernels.
//!
//! Needs a GPU adapter (CI: Mesa lavapipe) and the real model cache (scripts/fetch-models.sh);
//! without either the tests FAIL, never skip.

#![cfg(feature = "wgpu")]

use std::path::{Path, PathBuf};

use engine::config::ModelConfig;
use engine::device::{Device, RefDevice, WgpuDevice, WgpuOptions};
use engine::model::{Model, ModelOptions};
use engine::sampling::{Sampler, SamplingParams};
use engine::safetensors_source::SafetensorsFile;
use engine::session::Session;
use engine::weights::WeightSource;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array of ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn gpu(opts: WgpuOptions) -> WgpuDevice {
    pollster::block_on(WgpuDevice::new(opts)).unwrap_or_else(|e| {
        panic!("the wgpu model tests need a GPU adapter (CI: apt-get install mesa-vulkan-drivers libvulkan1): {e}")
    })
}

fn session(mut device: Box<dyn Device>, source: &dyn WeightSource, config: ModelConfig, opts: ModelOptions) -> Session {
    let model = Model::load(device.as_mut(), source, config, opts, &mut |_| {}).expect("load");
    Session::new(device, model)
}

fn greedy(session: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = pollster::block_on(session.prefill(prompt)).expect("prefill").logits;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = engine::sampling::greedy(&logits).expect("greedy");
        out.push(id);
        if i + 1 < n {
            logits = pollster::block_on(session.append(id)).expect("decode");
        }
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Full logits for every prompt position within 1e-4 of transformers, then 8 greedy ids.
fn check_tiny(name: &str, device: Box<dyn Device>) {
    let dir = fixtures().join("tiny").join(name);
    let config = ModelConfig::from_hf_json(&std::fs::read(dir.join("config.json")).expect("config.json")).expect("config");
    let source = SafetensorsFile::open(dir.join("model.safetensors")).expect("model.safetensors");
    let reference = read_json(&dir.join("reference.json"));
    let input = ids(&reference["input_ids"]);
    let backend = device.info().backend;
    let mut s = session(device, &source, config, ModelOptions { context: 64, chunk: 16, all_logits: true });

    let expected = SafetensorsFile::open(dir.join("reference.safetensors")).expect("reference.safetensors");
    let bytes = expected.tensor_bytes("logits").expect("logits");
    let expected: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let logits = pollster::block_on(s.logits_all(&input)).expect("forward");
    let diff = max_abs_diff(&logits, &expected);
    eprintln!("{name} on {backend}: max |Δlogits| = {diff:.2e}");
    assert!(diff <= 1e-4, "{name} on {backend}: max |Δlogits| = {diff:e} > 1e-4");

    let want = ids(&reference["greedy_8_ids"]);
    s.reset();
    assert_eq!(greedy(&mut s, &input, want.len()), want, "{name} on {backend}: greedy ids");
    for depth in [1, 3] {
        s.reset();
        assert_eq!(pipelined_greedy(&mut s, &input, want.len(), depth), want, "{name} on {backend}: pipelined greedy ids, depth {depth}");
    }

    // Top-k sampling from the device's TopK places (`generate`'s path) draws what sampling from
    // the read-back rows draws, on the same device.
    let params = SamplingParams { temperature: 0.9, top_k: 20, top_p: 0.95, seed: 7, ..SamplingParams::default() };
    s.reset();
    let (via_places, decided) = top_k_sampled(&mut s, &input, 16, &params);
    s.reset();
    let mut sampler = Sampler::new(params.clone()).expect("sampler");
    let mut logits = pollster::block_on(s.prefill(&input)).expect("prefill").logits;
    let mut via_rows = Vec::new();
    while via_rows.len() < 16 {
        let id = sampler.sample(&mut logits, &[]).expect("sample");
        via_rows.push(id);
        logits = pollster::block_on(s.append(id)).expect("decode");
    }
    assert_eq!(via_places, via_rows, "{name} on {backend}: top-k sampling from the device's places");
    assert!(decided >= 12, "{name} on {backend}: only {decided} of 16 draws decided by the places");
}

/// Sampled ids with the top-k places selected on the device, the row read only where they
/// cannot decide; also returns how many draws the places decided.
fn top_k_sampled(session: &mut Session, prompt: &[u32], n: usize, params: &SamplingParams) -> (Vec<u32>, usize) {
    let vocab = session.model().config().vocab_size;
    let mut sampler = Sampler::new(params.clone()).expect("sampler");
    let mut places = pollster::block_on(session.prefill_top_k(prompt)).expect("prefill_top_k").0;
    let (mut out, mut decided) = (Vec::new(), 0);
    while out.len() < n {
        let id = match sampler.sample_from_top(&places, vocab).expect("sample_from_top") {
            Some(id) => {
                decided += 1;
                id
            }
            None => sampler.sample(&mut pollster::block_on(session.last_logits()).expect("row"), &[]).expect("sample"),
        };
        out.push(id);
        places = pollster::block_on(session.append_top_k(id)).expect("decode");
    }
    (out, decided)
}

/// Greedy ids with the argmax on the device and `depth` chained passes in flight (`generate`'s path).
fn pipelined_greedy(session: &mut Session, prompt: &[u32], n: usize, depth: usize) -> Vec<u32> {
    let mut id = pollster::block_on(session.prefill_argmax(prompt)).expect("prefill_argmax").0;
    let mut out = vec![id];
    while out.len() < n {
        id = pollster::block_on(session.append_argmax_pipelined(id, depth)).expect("decode");
        out.push(id);
    }
    out
}

#[test]
fn tiny_models_match_transformers_on_wgpu() {
    for name in ["qwen2-tiny-random", "qwen3-tiny-random", "llama-tiny-random"] {
        check_tiny(name, Box::new(gpu(WgpuOptions::default())));
    }
}

/// A 100 kB binding limit splits the 1024 x 64 f32 embedding (256 kB) and lm_head into row parts
/// (several Embed / MatMul ops writing side by side); results stay the same on both devices.
#[test]
fn split_weights_match_transformers() {
    const LIMIT: u64 = 100_000;
    for name in ["qwen2-tiny-random", "qwen3-tiny-random", "llama-tiny-random"] {
        check_tiny(name, Box::new(RefDevice::with_max_binding_bytes(LIMIT)));
        let device = gpu(WgpuOptions { max_binding_bytes: Some(LIMIT), ..Default::default() });
        assert_eq!(device.info().max_binding_bytes, LIMIT);
        check_tiny(name, Box::new(device));
    }
}

fn real_model(file: &str) -> PathBuf {
    let dir = std::env::var_os("QWGLM_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qwglm/models")
    });
    let path = dir.join(file);
    assert!(path.exists(), "{} is missing: run scripts/fetch-models.sh (or set QWGLM_MODELS)", path.display());
    path
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF: the reference prompt gives transformers' 32 greedy ids.
#[test]
fn smollm2_q4_1_greedy_ids_on_wgpu() {
    let path = real_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let files = engine::loader::open_model(&path).expect("open gguf");
    let reference = read_json(&fixtures().join("real/smollm2-135m-instruct-q4_1.json"));
    let prompt = ids(&reference["prompt_ids"]);
    let want = ids(&reference["greedy_ids"]);
    let opts = ModelOptions { context: 256, chunk: 64, all_logits: false };
    let mut s = session(Box::new(gpu(WgpuOptions::default())), files.source.as_ref(), files.config.clone(), opts);
    let t0 = std::time::Instant::now();
    // The path `generate` takes for greedy decoding: argmax on the device, passes chained.
    let got = pipelined_greedy(&mut s, &prompt, want.len(), engine::session::DECODE_PIPELINE_DEPTH);
    eprintln!("SmolLM2 Q4_1 on wgpu: {} prompt tokens + {} greedy ids in {:.1?}", prompt.len(), got.len(), t0.elapsed());
    assert_eq!(got, want, "SmolLM2 Q4_1 greedy ids on wgpu");
}

/// The real Qwen2.5-Coder-0.5B GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K) with every Q4_K and Q6_K decode
/// matvec on the planes kernels (integer dot products over the activations' 8-bit planes; by
/// default only matrices of 2^24+ weights take them, which this model has none of): the
/// reference prompt's first 8 greedy ids from transformers. 8 of the 32, so lavapipe stays quick.
#[test]
fn qwen2_5_coder_planes_greedy_ids_on_wgpu() {
    let path = real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let files = engine::loader::open_model(&path).expect("open gguf");
    let reference = read_json(&fixtures().join("real/qwen2.5-coder-0.5b-instruct-q4_k_m.json"));
    let prompt = ids(&reference["prompt_ids"]);
    let want = &ids(&reference["greedy_ids"])[..8];
    let device = gpu(WgpuOptions { planes_min_weights: Some(0), ..Default::default() });
    assert!(device.info().name.contains("planes matvecs"), "{}", device.info().name);
    let opts = ModelOptions { context: 128, chunk: 64, all_logits: false };
    let mut s = session(Box::new(device), files.source.as_ref(), files.config.clone(), opts);
    let t0 = std::time::Instant::now();
    let got = pipelined_greedy(&mut s, &prompt, want.len(), engine::session::DECODE_PIPELINE_DEPTH);
    eprintln!("Qwen2.5-Coder-0.5B, planes matvecs, on wgpu: {} prompt tokens + {} greedy ids in {:.1?}", prompt.len(), got.len(), t0.elapsed());
    assert_eq!(got, want, "Qwen2.5-Coder-0.5B greedy ids on wgpu with planes matvecs");
}
