//! Beam search on the tiny random models equals transformers' `generate(num_beams=…)`:
//! same returned sequences, `sequences_scores` within 1e-4 (references: tests/fixtures/beam).

mod common;

use common::*;
use engine::beam::{beam_search, BeamHypothesis, BeamParams};
use engine::model::ModelOptions;

#[test]
fn beam_search_matches_transformers_on_tiny_models() {
    let refs = read_json(&fixtures().join("beam/beam_refs.json"));
    let cases = refs["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6, "expected a real set of cases, got {}", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = fixtures().join("tiny").join(case["model"].as_str().unwrap());
        let mut loaded = load_ref(&dir, ModelOptions { context: 64, chunk: 32, all_logits: false });
        let params: BeamParams = serde_json::from_value(case["params"].clone()).expect("params");
        let want: Vec<BeamHypothesis> = serde_json::from_value(case["hypotheses"].clone()).expect("hypotheses");
        let got = beam_search(&mut loaded.session, &ids(&case["prompt"]), &params).expect("beam search");
        assert_eq!(got.len(), want.len(), "{name}: number of hypotheses");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.tokens, w.tokens, "{name}: tokens");
            assert!((g.score - w.score).abs() <= 1e-4, "{name}: score {} vs {}", g.score, w.score);
        }
    }
}
