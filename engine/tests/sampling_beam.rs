//! Beam search against Hugging Face transformers 5.24, through a toy model defined identically
//! here and in tests/fixtures/beam/make_beam_refs.py (which produced toy_beam_refs.json).
//!
//! Run: cargo test -p engine --test sampling_beam

use std::path::PathBuf;

use engine::beam::{beam_search, BeamHypothesis, BeamModel, BeamParams, EarlyStopping};
use engine::sampling::splitmix64;
use engine::{EngineError, Result};
use serde::Deserialize;

const TOY_VOCAB: u64 = 16;

/// Logits as a fixed function of the whole prefix (see TOY_FORMULA in make_beam_refs.py).
/// Every value is a 24-bit fraction, so it is exact in f32 on both sides.
fn toy_logits(sequence: &[u32]) -> Vec<f32> {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &token in sequence {
        hash = (hash ^ token as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    (0..TOY_VOCAB)
        .map(|v| {
            let mut state = hash ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let x = splitmix64(&mut state);
            (x >> 40) as f32 / (1u32 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

/// The toy model; it also records how many sequences each call received.
#[derive(Default)]
struct ToyModel {
    calls: Vec<usize>,
}

impl BeamModel for ToyModel {
    fn next_logits(&mut self, beams: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.calls.push(beams.len());
        Ok(beams.iter().map(|beam| toy_logits(beam)).collect())
    }
}

#[derive(Debug, Deserialize)]
struct RefFile {
    transformers: String,
    cases: Vec<RefCase>,
}

#[derive(Debug, Deserialize)]
struct RefCase {
    name: String,
    prompt: Vec<u32>,
    params: BeamParams,
    /// Forward passes HF made (toy file only): checks that the search stops at the same step.
    #[serde(default)]
    steps: Option<usize>,
    pad_token_id: u32,
    /// HF pads short sequences with `pad or eos[0]` (so eos[0] when pad is 0), or -1 without EOS.
    hf_padding_id: i64,
    hypotheses: Vec<BeamHypothesis>,
    hf_sequences: Vec<Vec<i64>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/beam").join(name)
}

fn load(name: &str) -> RefFile {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn toy_model_formula_matches_python() {
    // Spot values printed by the Python `toy_logits([1, 2, 3])[:4]` (exact binary fractions).
    let python = [0.2312665_f32, -3.5945811, -3.4067817, -2.8194666];
    assert_eq!(&toy_logits(&[1, 2, 3])[..4], &python);
}

#[test]
fn toy_beam_search_matches_transformers() {
    let refs = load("toy_beam_refs.json");
    assert_eq!(refs.transformers, "5.24.0");
    assert!(refs.cases.len() >= 30);
    let mut eos_endings = 0;
    let mut stopped_early = 0;
    for case in &refs.cases {
        let mut model = ToyModel::default();
        let got = beam_search(&mut model, &case.prompt, &case.params).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(got.len(), case.hypotheses.len(), "{}: number of hypotheses", case.name);
        for (rank, (ours, theirs)) in got.iter().zip(&case.hypotheses).enumerate() {
            assert_eq!(ours.tokens, theirs.tokens, "{} hypothesis {rank}: tokens", case.name);
            assert!(
                (ours.score - theirs.score).abs() <= 1e-4,
                "{} hypothesis {rank}: score {} vs HF {}",
                case.name,
                ours.score,
                theirs.score
            );
            if ours.tokens.last().is_some_and(|t| case.params.eos_token_ids.contains(t)) {
                eos_endings += 1;
            }
        }
        // The first call carries the prompt only; later ones one sequence per beam.
        assert_eq!(model.calls[0], 1, "{}", case.name);
        assert!(model.calls[1..].iter().all(|&n| n == case.params.num_beams), "{}", case.name);
        assert_eq!(Some(model.calls.len()), case.steps, "{}: number of steps", case.name);
        stopped_early += usize::from(model.calls.len() < case.params.max_new_tokens);
    }
    assert!(eos_endings >= 10, "fixtures should exercise EOS endings, got {eos_endings}");
    assert!(stopped_early >= 10, "fixtures should exercise early stopping, got {stopped_early}");
}

#[test]
fn hf_sequences_are_prompt_plus_padded_hypotheses() {
    // Guards the fixture schema the engine-side tests rely on (both files).
    for file in ["toy_beam_refs.json", "beam_refs.json"] {
        let refs = load(file);
        for case in &refs.cases {
            assert_eq!(case.hypotheses.len(), case.params.num_return_sequences, "{}", case.name);
            let expected_padding = match case.params.eos_token_ids.first() {
                Some(&eos) if case.pad_token_id == 0 => eos as i64,
                Some(_) => case.pad_token_id as i64,
                None => -1,
            };
            assert_eq!(case.hf_padding_id, expected_padding, "{}", case.name);
            for (hyp, full) in case.hypotheses.iter().zip(&case.hf_sequences) {
                let as_i64 = |ids: &[u32]| ids.iter().map(|&t| t as i64).collect::<Vec<_>>();
                let (prompt, rest) = full.split_at(case.prompt.len());
                assert_eq!(prompt, &as_i64(&case.prompt)[..], "{}", case.name);
                assert_eq!(&rest[..hyp.tokens.len()], &as_i64(&hyp.tokens)[..], "{}", case.name);
                assert!(rest[hyp.tokens.len()..].iter().all(|&t| t == case.hf_padding_id), "{}", case.name);
                assert!(!hyp.tokens.is_empty() && hyp.tokens.len() <= case.params.max_new_tokens);
            }
            let scores: Vec<f32> = case.hypotheses.iter().map(|h| h.score).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{}: scores not sorted", case.name);
        }
    }
}

#[test]
fn early_stopping_modes_are_all_covered() {
    let refs = load("toy_beam_refs.json");
    for mode in [EarlyStopping::Eager, EarlyStopping::Heuristic, EarlyStopping::Never] {
        assert!(refs.cases.iter().any(|c| c.params.early_stopping == mode), "{mode:?}");
    }
}

/// A model that answers with the wrong number of rows must give an error, not a panic.
struct Broken;
impl BeamModel for Broken {
    fn next_logits(&mut self, _beams: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(vec![vec![0.0; 4]; 7])
    }
}

#[test]
fn model_errors_and_malformed_output_are_reported() {
    let params = BeamParams { num_beams: 2, max_new_tokens: 3, ..BeamParams::default() };
    assert!(matches!(beam_search(&mut Broken, &[1], &params), Err(EngineError::Corrupt { .. })));

    struct Failing;
    impl BeamModel for Failing {
        fn next_logits(&mut self, _beams: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
            Err(EngineError::Device("lost".into()))
        }
    }
    assert!(matches!(beam_search(&mut Failing, &[1], &params), Err(EngineError::Device(_))));
}
