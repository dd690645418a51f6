//! Beam search with the exact semantics of Hugging Face transformers 5.24
//! `generate(num_beams=W, do_sample=False, length_penalty, early_stopping, num_return_sequences,
//! max_new_tokens, eos_token_id)` for one prompt (`GenerationMixin._beam_search`).
//!
//! Per step, with `K = max(2, 1 + number of EOS ids) * W`:
//! 1. every running beam's next-token log-softmax is added to the beam's running score (f32);
//! 2. the K best (beam, token) continuations over all beams are kept, best first;
//! 3. a continuation "finishes" when its token is an EOS id or it reaches `max_new_tokens`;
//!    only finished continuations ranked among the first W become hypotheses, scored
//!    `sum of log-probs / generated_len ^ length_penalty` (generated_len counts the EOS token);
//! 4. the W best unfinished continuations become the running beams;
//! 5. the W best hypotheses so far are kept, best first;
//! 6. the search stops once every continuation of the step finished, or when all W hypothesis
//!    slots are full and either `early_stopping` is [`EarlyStopping::Eager`] or (heuristic) the best
//!    running beam cannot beat the worst hypothesis: its score divided by
//!    `len ^ length_penalty`, where `len` is its current generated length (or
//!    `max_new_tokens` for [`EarlyStopping::Never`] with a positive length penalty), is not
//!    greater than the worst hypothesis score.
//!
//! HF marks excluded entries by adding `-1e9` to f32 scores rather than with flags; this module
//! does the same arithmetic so that even corner cases (e.g. strongly negative length penalties
//! pushing real scores below `-1e9`) order like HF. Ties between equal scores, which
//! `torch.topk` leaves unspecified, go to the lower flattened index (beam-major, then token).

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::sampling::portable_exp;

/// HF's "this entry is excluded" offset on f32 scores.
const EXCLUDED: f32 = -1.0e9;

/// The model side of beam search. `beams` holds full token sequences (prompt + generated); the
/// answer is the logits at each sequence's last position, one row of vocabulary size per beam.
/// The first call passes the prompt alone (all beams start equal); later calls pass all W beams,
/// each usually one token longer than a beam of the previous call (beams are reordered, so a
/// model with per-beam KV caches should match them by prefix).
pub trait BeamModel {
    fn next_logits(&mut self, beams: &[&[u32]]) -> Result<Vec<Vec<f32>>>;
}

/// HF `early_stopping`: `true` ⇒ [`Eager`](Self::Eager), `false` ⇒ [`Heuristic`](Self::Heuristic),
/// `"never"` ⇒ [`Never`](Self::Never). Serialises as HF writes it (`true`, `false`, `"never"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "EarlyStoppingRepr", into = "EarlyStoppingRepr")]
pub enum EarlyStopping {
    /// Stop as soon as W hypotheses are finished.
    Eager,
    /// Stop when the best running beam, at its current length, cannot beat the worst hypothesis.
    #[default]
    Heuristic,
    /// As `Heuristic`, but with a positive length penalty assume the running beam could grow to
    /// `max_new_tokens` (the "canonical" beam search when combined with `length_penalty = 0`).
    Never,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum EarlyStoppingRepr {
    Flag(bool),
    Name(String),
}

impl TryFrom<EarlyStoppingRepr> for EarlyStopping {
    type Error = String;
    fn try_from(repr: EarlyStoppingRepr) -> Result<Self, String> {
        match repr {
            EarlyStoppingRepr::Flag(true) => Ok(Self::Eager),
            EarlyStoppingRepr::Flag(false) => Ok(Self::Heuristic),
            EarlyStoppingRepr::Name(name) => match name.as_str() {
                "never" => Ok(Self::Never),
                "eager" | "true" => Ok(Self::Eager),
                "heuristic" | "false" => Ok(Self::Heuristic),
                other => Err(format!("early_stopping must be true, false or \"never\", not {other:?}")),
            },
        }
    }
}

impl From<EarlyStopping> for EarlyStoppingRepr {
    fn from(value: EarlyStopping) -> Self {
        match value {
            EarlyStopping::Eager => Self::Flag(true),
            EarlyStopping::Heuristic => Self::Flag(false),
            EarlyStopping::Never => Self::Name("never".into()),
        }
    }
}

impl From<bool> for EarlyStopping {
    fn from(flag: bool) -> Self {
        if flag {
            Self::Eager
        } else {
            Self::Heuristic
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeamParams {
    /// Beam width W (>= 2).
    pub num_beams: usize,
    /// Exponent of the generated length that divides a finished hypothesis' log-probability.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// Upper bound on generated tokens (>= 1).
    pub max_new_tokens: usize,
    /// Tokens that finish a hypothesis (kept as its last token). May be empty.
    pub eos_token_ids: Vec<u32>,
    /// How many hypotheses to return, best first (1..=num_beams).
    pub num_return_sequences: usize,
}

impl Default for BeamParams {
    fn default() -> Self {
        // HF's defaults except the width (HF's 1 means "no beam search").
        Self {
            num_beams: 4,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            max_new_tokens: 20,
            eos_token_ids: Vec::new(),
            num_return_sequences: 1,
        }
    }
}

impl BeamParams {
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(EngineError::InvalidSampling(msg));
        if self.num_beams < 2 {
            // HF generate(num_beams=1) is greedy decoding, not a one-beam search.
            return invalid(format!("num_beams = {} must be at least 2 (use greedy decoding for 1)", self.num_beams));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return invalid(format!(
                "num_return_sequences = {} must be in 1..={} (num_beams)",
                self.num_return_sequences, self.num_beams
            ));
        }
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens must be at least 1".into());
        }
        if !self.length_penalty.is_finite() {
            return invalid(format!("length_penalty = {} is not finite", self.length_penalty));
        }
        Ok(())
    }

    /// Continuations kept per step: enough that W stay unfinished even if every beam's best
    /// tokens are all EOS ids.
    fn candidates_per_step(&self) -> usize {
        2usize.max(1 + self.eos_token_ids.len()) * self.num_beams
    }
}

/// A finished beam: the generated tokens (prompt excluded; ends with the EOS id when it stopped
/// on one) and HF's `sequences_scores` value for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeamHypothesis {
    pub tokens: Vec<u32>,
    pub score: f32,
}

#[derive(Debug, Clone)]
struct Beam {
    generated: Vec<u32>,
    score: f32,
}

/// A top-K continuation of one step.
#[derive(Debug, Clone, Copy)]
struct Continuation {
    beam: usize,
    token: u32,
    /// Running log-probability including this token.
    score: f32,
    finishes: bool,
}

/// A hypothesis slot, as HF keeps them: W slots, `finished == false` for filler.
#[derive(Debug, Clone)]
struct Slot {
    generated: Vec<u32>,
    score: f32,
    finished: bool,
}

/// Runs beam search from `prompt` and returns `num_return_sequences` hypotheses, best first.
pub fn beam_search<M: BeamModel + ?Sized>(model: &mut M, prompt: &[u32], params: &BeamParams) -> Result<Vec<BeamHypothesis>> {
    params.validate()?;
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let width = params.num_beams;
    let keep = params.candidates_per_step();

    // Only the first beam is live at the start; the others carry HF's -1e9 so none of their
    // (identical) continuations is picked.
    let mut running: Vec<Beam> = (0..width)
        .map(|i| Beam { generated: Vec::new(), score: if i == 0 { 0.0 } else { EXCLUDED } })
        .collect();
    let mut slots: Vec<Slot> = (0..width).map(|_| Slot { generated: Vec::new(), score: EXCLUDED, finished: false }).collect();
    let mut improvement_possible = true;

    for step in 0..params.max_new_tokens {
        let log_probs = running_log_probs(model, prompt, &running, step == 0)?;
        let vocab = log_probs[0].len();
        if vocab * width < keep {
            return Err(EngineError::InvalidSampling(format!(
                "vocabulary of {vocab} tokens is too small for {width} beams ({keep} candidates per step)"
            )));
        }

        let generated_len = step + 1;
        let continuations = top_continuations(&running, &log_probs, keep, |token| {
            params.eos_token_ids.contains(&token) || generated_len >= params.max_new_tokens
        });

        // Hypotheses first: it reads the slots' state from before this step, as HF does.
        slots = update_hypotheses(slots, &running, &continuations, params, generated_len, improvement_possible);
        running = next_running_beams(&running, &continuations, width);

        improvement_possible = improvement_possible && heuristic_allows_improvement(&running, &slots, params, generated_len);
        let all_slots_finished = slots.iter().all(|s| s.finished);
        let open_beam_needed = !(all_slots_finished && params.early_stopping == EarlyStopping::Eager);
        let some_continuation_open = continuations.iter().any(|c| !c.finishes);
        if !(improvement_possible && open_beam_needed && some_continuation_open) {
            break;
        }
    }

    Ok(slots
        .into_iter()
        .take(params.num_return_sequences)
        .map(|slot| BeamHypothesis { tokens: slot.generated, score: slot.score })
        .collect())
}

/// Asks the model for the next-token logits of every running beam and turns them into
/// log-probabilities. At the first step all beams equal the prompt, so the model runs once.
fn running_log_probs<M: BeamModel + ?Sized>(
    model: &mut M,
    prompt: &[u32],
    running: &[Beam],
    first_step: bool,
) -> Result<Vec<Vec<f32>>> {
    if first_step {
        let rows = model.next_logits(&[prompt])?;
        check_rows(&rows, 1)?;
        return Ok(vec![log_softmax(&rows[0]); running.len()]);
    }
    let sequences: Vec<Vec<u32>> = running.iter().map(|beam| [prompt, &beam.generated].concat()).collect();
    let views: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    let rows = model.next_logits(&views)?;
    check_rows(&rows, running.len())?;
    Ok(rows.iter().map(|row| log_softmax(row)).collect())
}

fn check_rows(rows: &[Vec<f32>], expected: usize) -> Result<()> {
    if rows.len() != expected {
        return Err(EngineError::corrupt("beam model output", format!("{} logit rows for {expected} beams", rows.len())));
    }
    let vocab = rows.first().map_or(0, Vec::len);
    if vocab == 0 || rows.iter().any(|row| row.len() != vocab) {
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        return Err(EngineError::corrupt("beam model output", format!("logit rows of lengths {lengths:?}")));
    }
    Ok(())
}

/// f32 log-softmax computed in f64. NaN logits count as -inf (torch would let them win top-k).
fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        // All -inf / NaN, or +inf present: no meaningful distribution, so nothing is reachable
        // except the +inf entries (probability shared equally).
        let infinite = logits.iter().filter(|v| **v == f32::INFINITY).count();
        return logits
            .iter()
            .map(|&v| if v == f32::INFINITY { -(infinite as f32).ln() } else { f32::NEG_INFINITY })
            .collect();
    }
    let sum: f64 = logits.iter().filter(|v| !v.is_nan()).map(|&v| portable_exp(v as f64 - max)).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|&v| if v.is_nan() { f32::NEG_INFINITY } else { (v as f64 - log_sum) as f32 }).collect()
}

/// The `keep` best (beam, token) continuations by running score, best first.
fn top_continuations(
    running: &[Beam],
    log_probs: &[Vec<f32>],
    keep: usize,
    finishes: impl Fn(u32) -> bool,
) -> Vec<Continuation> {
    // Order: higher score first, then lower flattened index (beam-major, then token).
    let better = |a: &(f32, usize, u32), b: &(f32, usize, u32)| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2)));
    let mut pool: Vec<(f32, usize, u32)> = Vec::with_capacity(keep * running.len());
    let mut row_scores: Vec<(f32, usize, u32)> = Vec::new();
    for (beam_index, (beam, row)) in running.iter().zip(log_probs).enumerate() {
        // A beam contributes at most `keep` entries to the global top-`keep`: select them in O(vocab).
        row_scores.clear();
        row_scores.extend(row.iter().enumerate().map(|(token, &lp)| (lp + beam.score, beam_index, token as u32)));
        if row_scores.len() > keep {
            row_scores.select_nth_unstable_by(keep - 1, better);
            row_scores.truncate(keep);
        }
        pool.extend_from_slice(&row_scores);
    }
    pool.sort_unstable_by(better);
    pool.truncate(keep);
    pool.into_iter()
        .map(|(score, beam, token)| Continuation { beam, token, score, finishes: finishes(token) })
        .collect()
}

/// HF `_get_running_beams_for_next_iteration`: the W best continuations after pushing finished
/// ones down by -1e9.
fn next_running_beams(running: &[Beam], continuations: &[Continuation], width: usize) -> Vec<Beam> {
    let mut ranked: Vec<(f32, usize)> = continuations
        .iter()
        .enumerate()
        .map(|(rank, c)| (if c.finishes { c.score + EXCLUDED } else { c.score }, rank))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked
        .into_iter()
        .take(width)
        .map(|(score, rank)| {
            let c = &continuations[rank];
            let mut generated = running[c.beam].generated.clone();
            generated.push(c.token);
            Beam { generated, score }
        })
        .collect()
}

/// `generated_len ^ length_penalty` as HF computes it: a Python float (f64) power, then used as
/// a scalar against f32 tensors.
fn length_normaliser(generated_len: usize, length_penalty: f32) -> f32 {
    (generated_len as f64).powf(length_penalty as f64) as f32
}

/// HF `_update_finished_beams`: merges this step's finished top-W continuations into the W
/// hypothesis slots, keeping the best W (old slots win ties).
fn update_hypotheses(
    slots: Vec<Slot>,
    running: &[Beam],
    continuations: &[Continuation],
    params: &BeamParams,
    generated_len: usize,
    improvement_possible: bool,
) -> Vec<Slot> {
    let width = params.num_beams;
    let normaliser = length_normaliser(generated_len, params.length_penalty);
    let slots_full_and_eager = slots.iter().all(|s| s.finished) && params.early_stopping == EarlyStopping::Eager;
    let mut merged: Vec<Slot> = slots;
    for (rank, c) in continuations.iter().enumerate() {
        let just_finished = c.finishes && rank < width;
        let mut score = c.score / normaliser;
        if slots_full_and_eager {
            score += EXCLUDED;
        }
        if !improvement_possible {
            score += EXCLUDED;
        }
        if !just_finished {
            score += EXCLUDED;
        }
        let mut generated = running[c.beam].generated.clone();
        generated.push(c.token);
        merged.push(Slot { generated, score, finished: just_finished });
    }
    let mut order: Vec<usize> = (0..merged.len()).collect();
    order.sort_by(|&a, &b| merged[b].score.total_cmp(&merged[a].score).then(a.cmp(&b)));
    order.truncate(width);
    let mut taken: Vec<Option<Slot>> = merged.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| taken[i].take()).collect()
}

/// HF `_check_early_stop_heuristic` for one prompt: can the best running beam still beat the
/// worst hypothesis? Always true while some slot is not finished.
fn heuristic_allows_improvement(running: &[Beam], slots: &[Slot], params: &BeamParams, generated_len: usize) -> bool {
    let best_length = if params.early_stopping == EarlyStopping::Never && params.length_penalty > 0.0 {
        params.max_new_tokens
    } else {
        generated_len
    };
    let best_possible = running[0].score / length_normaliser(best_length, params.length_penalty);
    let worst_slot_score = slots.iter().map(|s| s.score).fold(f32::INFINITY, f32::min);
    slots.iter().any(|slot| {
        let worst = if slot.finished { worst_slot_score } else { EXCLUDED };
        best_possible > worst
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose preferences don't depend on the prefix: token t has logit -t.
    struct Fixed(usize);
    impl BeamModel for Fixed {
        fn next_logits(&mut self, beams: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
            Ok(beams.iter().map(|_| (0..self.0).map(|t| -(t as f32)).collect()).collect())
        }
    }

    #[test]
    fn fixed_preferences_give_the_expected_beams() {
        let params = BeamParams { num_beams: 2, max_new_tokens: 2, num_return_sequences: 2, ..BeamParams::default() };
        let out = beam_search(&mut Fixed(5), &[7], &params).unwrap();
        assert_eq!(out[0].tokens, vec![0, 0]);
        // Second best two-token sequence: [0, 1] and [1, 0] tie; the lower flattened index wins.
        assert_eq!(out[1].tokens, vec![0, 1]);
        assert!(out[0].score > out[1].score);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut model = Fixed(5);
        assert!(matches!(beam_search(&mut model, &[], &BeamParams::default()), Err(EngineError::EmptyPrompt)));
        for width in [0, 1] {
            let narrow = BeamParams { num_beams: width, num_return_sequences: 1, ..BeamParams::default() };
            assert!(beam_search(&mut model, &[1], &narrow).is_err());
        }
        let too_many = BeamParams { num_return_sequences: 5, ..BeamParams::default() };
        assert!(beam_search(&mut model, &[1], &too_many).is_err());
        let tiny_vocab = BeamParams { num_beams: 4, ..BeamParams::default() };
        assert!(beam_search(&mut Fixed(1), &[1], &tiny_vocab).is_err());
    }

    #[test]
    fn early_stopping_serialises_like_hf() {
        let parse = |s: &str| serde_json::from_str::<EarlyStopping>(s).unwrap();
        assert_eq!(parse("true"), EarlyStopping::Eager);
        assert_eq!(parse("false"), EarlyStopping::Heuristic);
        assert_eq!(parse("\"never\""), EarlyStopping::Never);
        assert!(serde_json::from_str::<EarlyStopping>("\"sometimes\"").is_err());
        assert_eq!(serde_json::to_string(&EarlyStopping::Never).unwrap(), "\"never\"");
    }
}
