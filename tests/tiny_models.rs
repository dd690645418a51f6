//! Tiny random Qwen2 / Qwen3 / Llama checkpoints vs transformers: full logits within 1e-4 and the
//! same greedy tokens (fixtures and their generator in tests/fixtures/tiny).

mod common;

use common::*;
use engine::model::ModelOptions;
use safetensors::SafeTensors;

fn reference_logits(dir: &std::path::Path) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid reference.safetensors");
    let t = st.tensor("logits").expect("logits tensor");
    let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (values, t.shape().to_vec())
}

fn check_model(name: &str) {
    let dir = fixtures().join("tiny").join(name);
    let reference = read_json(&dir.join("reference.json"));
    let input = ids(&reference["input_ids"]);
    let opts = ModelOptions { context: 64, chunk: 16, all_logits: true };
    let mut loaded = load_ref(&dir, opts);

    // 1. Full logits for every position, one forward pass.
    let (expected, shape) = reference_logits(&dir);
    let logits = pollster::block_on(loaded.session.logits_all(&input)).expect("forward");
    assert_eq!(shape, vec![input.len(), loaded.session.model().config().vocab_size]);
    let diff = max_abs_diff(&logits, &expected);
    assert!(diff <= 1e-4, "{name}: max |Δlogits| = {diff:e} > 1e-4");

    // 2. Greedy decoding with the KV cache.
    let want = ids(&reference["greedy_8_ids"]);
    loaded.session.reset();
    let got = greedy_ids(&mut loaded.session, &input, want.len());
    assert_eq!(got, want, "{name}: greedy ids");

    // 3. The same ids when the device takes the argmax (greedy `generate` without penalties).
    loaded.session.reset();
    let on_device = device_greedy_ids(&mut loaded.session, &input, want.len());
    assert_eq!(on_device, want, "{name}: greedy ids with the argmax on the device");

    // 4. Pipelined decoding (chained passes in flight), with and without a break in the chain;
    // the cache then holds exactly the accepted tokens, so a prefill of them reuses all but one.
    for depth in 1..=4 {
        for restart_at in [None, Some(3)] {
            loaded.session.reset();
            let got = pipelined_greedy_ids(&mut loaded.session, &input, want.len(), depth, restart_at);
            assert_eq!(got, want, "{name}: pipelined greedy ids, depth {depth}, restart {restart_at:?}");
            let accepted: Vec<u32> = input.iter().chain(&got[..got.len() - 1]).copied().collect();
            assert_eq!(loaded.session.cached_tokens(), &accepted[..], "{name}: cached tokens after pipelined decode");
        }
    }
}

#[test]
fn qwen2_tiny_matches_transformers() {
    check_model("qwen2-tiny-random");
}

#[test]
fn qwen3_tiny_matches_transformers() {
    check_model("qwen3-tiny-random");
}

#[test]
fn llama_tiny_matches_transformers() {
    check_model("llama-tiny-random");
}

/// Chunked prefill (chunk smaller than the prompt) gives the same logits as one pass.
#[test]
fn chunked_prefill_equals_single_pass() {
    let dir = fixtures().join("tiny/qwen3-tiny-random");
    let input = ids(&read_json(&dir.join("reference.json"))["input_ids"]);
    let mut one = load_ref(&dir, ModelOptions { context: 64, chunk: 16, all_logits: true });
    let mut chunked = load_ref(&dir, ModelOptions { context: 64, chunk: 5, all_logits: true });
    let a = pollster::block_on(one.session.logits_all(&input)).expect("forward");
    let b = pollster::block_on(chunked.session.logits_all(&input)).expect("forward");
    assert!(max_abs_diff(&a, &b) <= 1e-5);
}

/// A second prompt sharing a prefix reuses the cache and still gives the from-scratch logits.
#[test]
fn prefix_reuse_matches_recompute() {
    let dir = fixtures().join("tiny/qwen2-tiny-random");
    let input = ids(&read_json(&dir.join("reference.json"))["input_ids"]);
    let opts = ModelOptions { context: 64, chunk: 16, all_logits: false };
    let mut warm = load_ref(&dir, opts);
    let mut cold = load_ref(&dir, opts);
    pollster::block_on(warm.session.prefill(&input)).expect("prefill");
    let mut second = input[..8].to_vec();
    second.extend([3, 14, 15, 92]);
    let reused = pollster::block_on(warm.session.prefill(&second)).expect("prefill");
    assert_eq!(reused.reused, 8, "the shared 8-token prefix is not recomputed");
    assert_eq!(reused.computed, 4);
    let fresh = pollster::block_on(cold.session.prefill(&second)).expect("prefill");
    assert!(max_abs_diff(&reused.logits, &fresh.logits) <= 1e-6);
}

/// A prompt longer than the context is a typed error, not a panic or a silent truncation.
#[test]
fn oversized_prompt_is_rejected() {
    let dir = fixtures().join("tiny/llama-tiny-random");
    let mut loaded = load_ref(&dir, ModelOptions { context: 8, chunk: 4, all_logits: false });
    let err = pollster::block_on(loaded.session.prefill(&[1; 9])).unwrap_err();
    assert!(matches!(err, engine::EngineError::ContextOverflow { prompt: 9, context: 8 }), "{err}");
    let err = pollster::block_on(loaded.session.prefill(&[5000])).unwrap_err();
    assert!(matches!(err, engine::EngineError::Tokenizer(_)), "out-of-vocabulary id: {err}");
}
