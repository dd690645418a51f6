//! Token sampling: penalties, temperature, top-k / top-p / min-p filtering and a seeded draw.
//!
//! Pipeline, in the order `Sampler::sample` applies it (the order Hugging Face `generate` uses:
//! logits processors first, then the warpers temperature → top-k → top-p → min-p):
//!
//! 1. **Penalties** on the raw logits: repetition penalty (HF: divide positive logits, multiply
//!    negative ones, once per distinct token), then presence/frequency penalties (OpenAI:
//!    `logit -= presence * [count > 0] + frequency * count`), all over the last `penalty_window`
//!    tokens of the history.
//! 2. **Temperature**: `temperature == 0` means greedy (argmax of the penalised logits). Otherwise
//!    the logits are shifted by their maximum and divided by the temperature. The shift does not
//!    change any later step (all of them are shift invariant) but keeps tiny temperatures from
//!    overflowing to `+inf`.
//! 3. **Top-k**: keep every token whose logit is at least the k-th largest (ties at the boundary
//!    are all kept, as in HF's `TopKLogitsWarper`).
//! 4. **Top-p**: keep the smallest set of most likely tokens whose probability mass reaches
//!    `top_p`, plus every token tied with the last one kept.
//! 5. **Min-p**: keep tokens whose probability is at least `min_p` times the top probability.
//! 6. **Softmax** over the survivors and a draw from the seeded generator.
//!
//! Reproducibility: the generator is xoshiro256** seeded with splitmix64, and the softmax uses
//! [`portable_exp`], built from IEEE basic operations only, so a seed gives the same tokens on
//! native targets and on wasm32 (whose `exp` comes from a different libm).

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Sampling knobs. Every filter's default value switches it off; the default temperature is 0,
/// i.e. greedy decoding, so `SamplingParams::default()` reproduces HF's `do_sample=False`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (plus ties); 0 = off.
    pub top_k: usize,
    /// Nucleus mass in [0, 1]; 1 = off.
    pub top_p: f32,
    /// Relative probability floor in [0, 1]; 0 = off.
    pub min_p: f32,
    /// HF repetition penalty (> 0); 1 = off.
    pub repetition_penalty: f32,
    /// OpenAI presence penalty in [-2, 2]; 0 = off.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty in [-2, 2]; 0 = off.
    pub frequency_penalty: f32,
    /// Penalties look at the last `penalty_window` tokens of the history; 0 = all of it.
    pub penalty_window: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no penalties.
    pub fn greedy() -> Self {
        Self::default()
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Rejects NaN, infinite, negative and out-of-range values.
    pub fn validate(&self) -> Result<()> {
        fn check(ok: bool, what: &str, value: f32, range: &str) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(EngineError::InvalidSampling(format!("{what} = {value} is outside {range}")))
            }
        }
        let t = self.temperature;
        check(t.is_finite() && t >= 0.0, "temperature", t, "[0, inf)")?;
        let p = self.top_p;
        check((0.0..=1.0).contains(&p), "top_p", p, "[0, 1]")?;
        let m = self.min_p;
        check((0.0..=1.0).contains(&m), "min_p", m, "[0, 1]")?;
        let r = self.repetition_penalty;
        check(r.is_finite() && r > 0.0, "repetition_penalty", r, "(0, inf)")?;
        let pp = self.presence_penalty;
        check((-2.0..=2.0).contains(&pp), "presence_penalty", pp, "[-2, 2]")?;
        let fp = self.frequency_penalty;
        check((-2.0..=2.0).contains(&fp), "frequency_penalty", fp, "[-2, 2]")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------------------------

/// One step of splitmix64 (Steele, Lea & Flood): advances `state` and returns a well-mixed word.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman & Vigna): small, fast, and the same bits on every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoshiro256StarStar {
    state: [u64; 4],
}

impl Xoshiro256StarStar {
    /// Expands a 64-bit seed with splitmix64, as the xoshiro authors recommend (this never yields
    /// the forbidden all-zero state).
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let state = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Self { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Portable math
// ---------------------------------------------------------------------------------------------

/// `e^x` from IEEE add/mul only, so it rounds identically on every target (std's `exp` calls
/// the platform libm, which differs between glibc and wasm32). Relative error ≈ 1e-16.
pub fn portable_exp(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1; // high bits of ln 2, exact times small ints
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 709.78 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = k ln2 + r with |r| <= ln2 / 2; rounding via a truncating cast (exact, no libm).
    let k_float = x * std::f64::consts::LOG2_E;
    let k = (k_float + if k_float < 0.0 { -0.5 } else { 0.5 }) as i32;
    let r = (x - k as f64 * LN2_HI) - k as f64 * LN2_LO;
    // Taylor series to degree 13: the remainder is below 1e-17 on |r| <= 0.347.
    let mut poly = 1.0;
    for n in (1..=13).rev() {
        poly = 1.0 + poly * r / n as f64;
    }
    // Scale by 2^k in two steps so that subnormal results round correctly.
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if k < -1000 {
        poly * pow2(k + 200) * pow2(-200)
    } else if k > 1000 {
        poly * pow2(k - 200) * pow2(200)
    } else {
        poly * pow2(k)
    }
}

// ---------------------------------------------------------------------------------------------
// Greedy
// ---------------------------------------------------------------------------------------------

/// Argmax of `logits`: the lowest index wins ties and NaN never wins. Fails only when there is
/// no non-NaN logit at all (including an empty slice).
pub fn greedy(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (index, &value) in logits.iter().enumerate() {
        if value.is_nan() {
            continue;
        }
        match best {
            Some((_, best_value)) if value <= best_value => {}
            _ => best = Some((index, value)),
        }
    }
    match best {
        Some((index, _)) => token_id(index),
        None => Err(EngineError::InvalidSampling(format!(
            "greedy: no usable logit among {} values (empty or all NaN)",
            logits.len()
        ))),
    }
}

fn token_id(index: usize) -> Result<u32> {
    u32::try_from(index).map_err(|_| EngineError::InvalidSampling(format!("vocabulary index {index} exceeds u32")))
}

// ---------------------------------------------------------------------------------------------
// Sampler
// ---------------------------------------------------------------------------------------------

/// A sampler holds validated parameters, the random generator and scratch buffers reused across
/// calls (vocabularies of 150k+ tokens make per-token allocation noticeable).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256StarStar,
    survivors: Vec<u32>,
    weights: Vec<f64>,
    window_scratch: Vec<(u32, bool)>,
}

/// Below this many candidates top-p sorts everything; above, it sorts a growing prefix.
const TOP_P_FIRST_PREFIX: usize = 64;

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Xoshiro256StarStar::seed_from_u64(params.seed);
        Ok(Self { params, rng, survivors: Vec::new(), weights: Vec::new(), window_scratch: Vec::new() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Restarts the random sequence as if freshly built with `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = Xoshiro256StarStar::seed_from_u64(seed);
    }

    /// Picks the next token. `context` is the token history the penalties look at; every token
    /// in it counts for presence/frequency penalties. Use [`Sampler::sample_with_prompt`] to keep
    /// prompt tokens out of those (OpenAI semantics).
    ///
    /// `logits` is used as scratch: afterwards it holds the penalised, shifted and
    /// temperature-scaled values. Errors when `logits` is empty or every logit is NaN / `-inf`.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> Result<u32> {
        self.sample_with_prompt(logits, context, 0)
    }

    /// As [`Sampler::sample`], with `tokens[..prompt_len]` being the prompt: the repetition
    /// penalty (HF) sees the whole window, presence/frequency penalties (OpenAI) only its
    /// generated part.
    pub fn sample_with_prompt(&mut self, logits: &mut [f32], tokens: &[u32], prompt_len: usize) -> Result<u32> {
        if logits.is_empty() {
            return Err(EngineError::InvalidSampling("empty logits".into()));
        }
        self.apply_penalties_with_scratch(logits, tokens, prompt_len);
        if self.params.is_greedy() {
            return greedy(logits);
        }
        let mut survivors = std::mem::take(&mut self.survivors);
        let mut weights = std::mem::take(&mut self.weights);
        let result = filter_and_weigh(&self.params, logits, &mut survivors, &mut weights).map(|total| {
            // Walk the cumulative weights; the last positive weight catches rounding at the top end.
            let target = self.rng.next_f64() * total;
            let mut cumulative = 0.0;
            let mut chosen = survivors[0];
            for (&id, &weight) in survivors.iter().zip(&weights) {
                if weight > 0.0 {
                    chosen = id;
                    cumulative += weight;
                    if target < cumulative {
                        break;
                    }
                }
            }
            chosen
        });
        self.survivors = survivors;
        self.weights = weights;
        result
    }

    /// The tokens `sample` could return for these logits and this history, with their
    /// probabilities, most likely first (ties: lower id first). Does not touch the generator.
    pub fn candidates(&self, logits: &[f32], context: &[u32]) -> Result<Vec<(u32, f32)>> {
        self.candidates_with_prompt(logits, context, 0)
    }

    /// As [`Sampler::candidates`] with a prompt prefix, see [`Sampler::sample_with_prompt`].
    pub fn candidates_with_prompt(&self, logits: &[f32], tokens: &[u32], prompt_len: usize) -> Result<Vec<(u32, f32)>> {
        if logits.is_empty() {
            return Err(EngineError::InvalidSampling("empty logits".into()));
        }
        let mut work = logits.to_vec();
        self.apply_penalties(&mut work, tokens, prompt_len);
        if self.params.is_greedy() {
            return Ok(vec![(greedy(&work)?, 1.0)]);
        }
        let mut survivors = Vec::new();
        let mut weights = Vec::new();
        let total = filter_and_weigh(&self.params, &mut work, &mut survivors, &mut weights)?;
        let mut out: Vec<(u32, f32)> = survivors
            .iter()
            .zip(&weights)
            .filter(|(_, &w)| w > 0.0)
            .map(|(&id, &w)| (id, (w / total) as f32))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Applies the repetition, presence and frequency penalties in place (step 1 of the
    /// pipeline). Tokens outside the vocabulary are ignored.
    pub fn apply_penalties(&self, logits: &mut [f32], tokens: &[u32], prompt_len: usize) {
        let mut scratch = Vec::new();
        penalise(&self.params, logits, tokens, prompt_len, &mut scratch);
    }

    fn apply_penalties_with_scratch(&mut self, logits: &mut [f32], tokens: &[u32], prompt_len: usize) {
        let mut scratch = std::mem::take(&mut self.window_scratch);
        penalise(&self.params, logits, tokens, prompt_len, &mut scratch);
        self.window_scratch = scratch;
    }
}

fn penalise(params: &SamplingParams, logits: &mut [f32], tokens: &[u32], prompt_len: usize, scratch: &mut Vec<(u32, bool)>) {
    if !params.has_penalties() || tokens.is_empty() {
        return;
    }
    let start = match params.penalty_window {
        0 => 0,
        window => tokens.len().saturating_sub(window),
    };
    // Sorting (token, generated?) pairs groups each token's occurrences without a hash map.
    scratch.clear();
    scratch.extend(tokens[start..].iter().enumerate().map(|(offset, &t)| (t, start + offset >= prompt_len)));
    scratch.sort_unstable();
    let mut group_start = 0;
    while group_start < scratch.len() {
        let token = scratch[group_start].0;
        let group_end = group_start + scratch[group_start..].iter().take_while(|(t, _)| *t == token).count();
        let generated_count = scratch[group_start..group_end].iter().filter(|(_, generated)| *generated).count();
        group_start = group_end;
        let Some(logit) = logits.get_mut(token as usize) else { continue };
        if params.repetition_penalty != 1.0 {
            // HF: `score < 0 ? score * p : score / p`, so the penalty always lowers the logit (p > 1).
            *logit = if *logit < 0.0 { *logit * params.repetition_penalty } else { *logit / params.repetition_penalty };
        }
        if generated_count > 0 {
            *logit -= params.presence_penalty + params.frequency_penalty * generated_count as f32;
        }
    }
}

/// Temperature, top-k, top-p and min-p (steps 2–5). Leaves the surviving token ids in
/// `survivors` with their unnormalised softmax weights in `weights`, and returns the weights'
/// sum. `logits` is overwritten with the shifted, temperature-scaled values.
fn filter_and_weigh(
    params: &SamplingParams,
    logits: &mut [f32],
    survivors: &mut Vec<u32>,
    weights: &mut Vec<f64>,
) -> Result<f64> {
    survivors.clear();
    weights.clear();
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::INFINITY {
        // Infinite logits dominate everything else: share the probability among them.
        survivors.extend((0..logits.len()).filter(|&i| logits[i] == f32::INFINITY).map(|i| i as u32));
        weights.resize(survivors.len(), 1.0);
        return Ok(survivors.len() as f64);
    }
    if max == f32::NEG_INFINITY {
        return Err(EngineError::InvalidSampling("every logit is -inf or NaN".into()));
    }
    let temperature = params.temperature;
    for value in logits.iter_mut() {
        *value = (*value - max) / temperature;
    }
    // NaN and -inf never survive; the token at the maximum (0 after the shift) always does.
    survivors.extend(
        logits.iter().enumerate().filter(|(_, v)| **v > f32::NEG_INFINITY).map(|(i, _)| i as u32),
    );
    let logits: &[f32] = logits;
    let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));

    if params.top_k > 0 && params.top_k < survivors.len() {
        let k = params.top_k;
        survivors.select_nth_unstable_by(k - 1, by_logit_desc);
        let threshold = logits[survivors[k - 1] as usize];
        survivors.retain(|&id| logits[id as usize] >= threshold);
    }

    if params.top_p < 1.0 && survivors.len() > 1 {
        // Logits are shifted so the maximum is 0: weights are exp(logit), all in (0, 1].
        let total: f64 = survivors.iter().map(|&id| portable_exp(logits[id as usize] as f64)).sum();
        let target = params.top_p as f64 * total;
        // The nucleus is usually tiny: sort a growing prefix rather than the whole vocabulary.
        let mut prefix = TOP_P_FIRST_PREFIX.min(survivors.len());
        let threshold = loop {
            if prefix < survivors.len() {
                survivors.select_nth_unstable_by(prefix - 1, by_logit_desc);
            }
            survivors[..prefix].sort_unstable_by(by_logit_desc);
            let mut cumulative = 0.0;
            let cut = survivors[..prefix].iter().position(|&id| {
                cumulative += portable_exp(logits[id as usize] as f64);
                cumulative >= target
            });
            match cut {
                Some(last_kept) => break logits[survivors[last_kept] as usize],
                // Rounding kept the sum just under the target: keep everything.
                None if prefix == survivors.len() => break f32::NEG_INFINITY,
                None => prefix = (prefix * 4).min(survivors.len()),
            }
        };
        survivors.retain(|&id| logits[id as usize] >= threshold);
    }

    if params.min_p > 0.0 {
        // p_i >= min_p * p_max  ⟺  exp(logit_i - logit_max) >= min_p, and logit_max is 0 here.
        let min_p = params.min_p as f64;
        survivors.retain(|&id| portable_exp(logits[id as usize] as f64) >= min_p);
    }

    weights.extend(survivors.iter().map(|&id| portable_exp(logits[id as usize] as f64)));
    let total: f64 = weights.iter().sum();
    if !(total > 0.0) {
        return Err(EngineError::InvalidSampling("no token left after filtering".into()));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_exp_matches_std() {
        let mut x = -750.0;
        while x < 710.0 {
            let ours = portable_exp(x);
            let std = x.exp();
            let rel = if std == 0.0 { ours } else { ((ours - std) / std).abs() };
            assert!(rel < 1e-14 || (std < 1e-300 && (ours - std).abs() < 1e-310), "x={x}: {ours} vs {std}");
            x += 0.37;
        }
        assert_eq!(portable_exp(0.0), 1.0);
        assert_eq!(portable_exp(f64::NEG_INFINITY), 0.0);
        assert!(portable_exp(f64::NAN).is_nan());
    }

    #[test]
    fn splitmix64_known_value() {
        // First output of splitmix64 seeded with 0, as published with the reference C code.
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
    }
}
