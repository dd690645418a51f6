//! Real GGUFs on the reference device vs transformers (weights dequantized to f32): for each
//! reference prompt, our template + tokenizer give the same prompt ids, all 32 greedy ids match,
//! and the first position's top-5 logits agree within 1e-3. References: tests/fixtures/real.

mod common;

use common::*;
use engine::chat::{ChatMessage, RenderOptions};
use engine::model::ModelOptions;

fn check_model(gguf: &str, stem: &str) {
    let path = real_model(gguf);
    let mut loaded = load_ref(&path, ModelOptions { context: 1024, chunk: 256, all_logits: false });
    let tokenizer = loaded.files.tokenizer.take().expect("GGUF carries a tokenizer");
    let template = loaded.files.template.take().expect("GGUF carries a chat template");
    let dir = fixtures().join("real");
    let mut cases = vec![dir.join(format!("{stem}.json"))];
    for case in ["multi_turn", "multilingual", "long"] {
        cases.push(dir.join(format!("{stem}.{case}.json")));
    }
    for case in cases {
        let reference = read_json(&case);
        let label = case.file_name().unwrap().to_string_lossy().to_string();
        let messages: Vec<ChatMessage> = serde_json::from_value(reference["messages"].clone()).expect("messages");
        let opts = RenderOptions { add_generation_prompt: true, ..RenderOptions::default() };
        let prompt_text = template.render(&messages, &opts).expect("render");
        assert_eq!(prompt_text, reference["prompt_text"].as_str().unwrap(), "{label}: rendered prompt");
        let prompt = tokenizer.encode(&prompt_text, false).expect("encode");
        assert_eq!(prompt, ids(&reference["prompt_ids"]), "{label}: prompt ids");

        let want = ids(&reference["greedy_ids"]);
        let first = pollster::block_on(loaded.session.prefill(&prompt)).expect("prefill").logits;
        let top5 = &reference["first_position_top5"];
        let want_top = ids(&top5["top5_ids"]);
        let got_top: Vec<u32> = top_k(&first, 5).into_iter().map(|i| i as u32).collect();
        assert_eq!(got_top, want_top, "{label}: first-position top-5 ids");
        for (id, want_logit) in want_top.iter().zip(top5["top5_logits"].as_array().unwrap()) {
            let (got, want) = (first[*id as usize], want_logit.as_f64().unwrap() as f32);
            // The reference rounds to 5 decimals, so allow that on top of 1e-3.
            assert!((got - want).abs() <= 1e-3 + 5e-6, "{label}: logit of {id}: {got} vs {want}");
        }
        let got = greedy_ids(&mut loaded.session, &prompt, want.len());
        assert_eq!(got, want, "{label}: greedy ids");
        eprintln!("{label}: ok ({} prompt tokens)", prompt.len());
    }
}

#[test]
fn smollm2_135m_q4_1_matches_transformers() {
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-q4_1");
}

#[test]
fn qwen2_5_coder_0_5b_matches_transformers() {
    check_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m");
}
