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

    /// Greedy with no penalties: the next token is the plain argmax of the logits, so the device
    /// can compute it and the logits need not be read back.
    pub fn is_plain_argmax(&self) -> bool {
        self.is_greedy() && !self.has_penalties()
    }

    /// Places of the largest logits that decide the next token, where a device can select them
    /// (`Op::TopK`, `TOP_K_MAX` places) so the host reads those instead of the vocabulary row:
    /// sampling with top-k on (1 <= top_k < TOP_K_MAX, one place to spare to prove that no tie
    /// continues past the places read) and no penalties (which would move logits the device
    /// did not see). See [`Sampler::sample_from_top`].
    pub fn device_top_k(&self) -> Option<u32> {
        let fits = self.top_k > 0 && self.top_k < crate::kernels::TOP_K_MAX as usize;
        (!self.is_greedy() && !self.has_penalties() && fits).then_some(crate::kernels::TOP_K_MAX)
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

/// 2^(j/16) for j = 0..16, correctly rounded (computed with mpmath at 200 bits of precision).
const EXP2_SIXTEENTHS: [u64; 16] = [
    0x3ff0000000000000,
    0x3ff0b5586cf9890f,
    0x3ff172b83c7d517b,
    0x3ff2387a6e756238,
    0x3ff306fe0a31b715,
    0x3ff3dea64c123422,
    0x3ff4bfdad5362a27,
    0x3ff5ab07dd485429,
    0x3ff6a09e667f3bcd,
    0x3ff7a11473eb0187,
    0x3ff8ace5422aa0db,
    0x3ff9c49182a3f090,
    0x3ffae89f995ad3ad,
    0x3ffc199bdd85529c,
    0x3ffd5818dcfba487,
    0x3ffea4afa2a490da,
];

/// `e^x` from IEEE add/mul and a constant table only, so it rounds identically on every target
/// (std's `exp` calls the platform libm, which differs between glibc and wasm32). Within a few
/// ulp of the true value.
pub fn portable_exp(x: f64) -> f64 {
    // ln 2 = LN2_HI + LN2_LO, split so that n * LN2_HI is exact for |n| < 2^21 (the low 21
    // mantissa bits of LN2_HI are zero).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 709.782_712_893_384 {
        // ln(f64::MAX)
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = (16 k + j) ln2/16 + r with |r| <= ln2/32; rounding via a truncating cast (no libm).
    let scaled = x * (16.0 * std::f64::consts::LOG2_E);
    let n = (scaled + if scaled < 0.0 { -0.5 } else { 0.5 }) as i32;
    let r = (x - n as f64 * (LN2_HI / 16.0)) - n as f64 * (LN2_LO / 16.0);
    let (j, k) = (n & 15, n >> 4); // n = 16 k + j with 0 <= j < 16, also for negative n
    // Taylor series to degree 7: the remainder is below 2e-18 on |r| <= 0.0217.
    let tail = r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))));
    let poly = 1.0 + (r + r * r * (0.5 + tail));
    let mantissa = poly * f64::from_bits(EXP2_SIXTEENTHS[j as usize]);
    // Scale by 2^k in two steps near the ends of the range so subnormals round correctly.
    let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if k < -1000 {
        mantissa * pow2(k + 200) * pow2(-200)
    } else if k > 1000 {
        mantissa * pow2(k - 200) * pow2(200)
    } else {
        mantissa * pow2(k)
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

/// One token still in the running: its shifted, temperature-scaled logit and softmax weight
/// `exp(value)` (the maximum has value 0 and weight 1).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    value: f32,
    id: u32,
    weight: f64,
}

/// A sampler holds validated parameters, the random generator and scratch buffers reused across
/// calls (vocabularies of 150k+ tokens make per-token allocation noticeable).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256StarStar,
    scratch: Scratch,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    candidates: Vec<Candidate>,
    top_values: Vec<f32>,
    window: Vec<(u32, bool)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = Xoshiro256StarStar::seed_from_u64(params.seed);
        Ok(Self { params, rng, scratch: Scratch::default() })
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
        penalise(&self.params, logits, tokens, prompt_len, &mut self.scratch.window);
        if self.params.is_greedy() {
            return greedy(logits);
        }
        let total = filter(&self.params, logits, &mut self.scratch)?;
        Ok(self.draw(total))
    }

    /// The draw over `scratch.candidates` (left by `filter`, weights summing to `total`): one
    /// number from the generator, then a walk over the cumulative weights; the last positive
    /// weight absorbs rounding at the top end. Returns the candidate's index into the logits.
    fn draw(&mut self, total: f64) -> u32 {
        let target = self.rng.next_f64() * total;
        let mut cumulative = 0.0;
        let mut chosen = self.scratch.candidates[0].id;
        for candidate in &self.scratch.candidates {
            if candidate.weight > 0.0 {
                chosen = candidate.id;
                cumulative += candidate.weight;
                if target < cumulative {
                    break;
                }
            }
        }
        chosen
    }

    /// As [`Sampler::sample`] (no history: `device_top_k` excludes penalties) from the largest
    /// logits of a `vocab`-sized row instead of the row: `top` holds (id, value) places, largest
    /// first, as `Op::TopK` writes them (ids >= vocab mark places past the row). The same token
    /// and the same generator state as `sample` on the whole row, or `Ok(None)` (generator
    /// untouched) when these places cannot prove it: the params don't allow it, a deciding
    /// value is not finite, or a value tied with the k-th (after the temperature) may lie past
    /// the places read. Then the caller samples from the row.
    pub fn sample_from_top(&mut self, top: &[(u32, f32)], vocab: usize) -> Result<Option<u32>> {
        let k = self.params.top_k;
        if self.params.device_top_k().is_none() || k >= top.len() {
            return Ok(None);
        }
        let present = top.iter().take_while(|(id, _)| (*id as usize) < vocab).count();
        let places = &top[..present];
        if present < k || places[..k].iter().any(|(_, v)| !v.is_finite()) {
            return Ok(None);
        }
        // `filter` scales (v - max) / temperature; a place past those read has a value <= the
        // last one read, so a scaled value <= its scaled value (rounding is monotonic).
        let max = places[0].1;
        let scaled = |v: f32| (v - max) / self.params.temperature;
        let exhausted = present < top.len() || present == vocab;
        if !exhausted && !(scaled(places[present - 1].1) < scaled(places[k - 1].1)) {
            return Ok(None);
        }
        // The places as a short row in id order: `filter` keeps the same candidates in the same
        // relative order (ids only compared with each other), so the draw matches the full row's.
        let mut by_id: Vec<(u32, f32)> = places.to_vec();
        by_id.sort_unstable_by_key(|(id, _)| *id);
        let mut row: Vec<f32> = by_id.iter().map(|(_, v)| *v).collect();
        let total = filter(&self.params, &mut row, &mut self.scratch)?;
        let index = self.draw(total);
        Ok(Some(by_id[index as usize].0))
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
        let mut scratch = Scratch::default();
        let total = filter(&self.params, &mut work, &mut scratch)?;
        let mut out: Vec<(u32, f32)> = scratch
            .candidates
            .iter()
            .filter(|c| c.weight > 0.0)
            .map(|c| (c.id, (c.weight / total) as f32))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Applies the repetition, presence and frequency penalties in place (step 1 of the
    /// pipeline). Tokens outside the vocabulary are ignored.
    pub fn apply_penalties(&self, logits: &mut [f32], tokens: &[u32], prompt_len: usize) {
        penalise(&self.params, logits, tokens, prompt_len, &mut Vec::new());
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

/// Temperature, top-k, top-p and min-p (steps 2–5). Leaves the survivors with their
/// unnormalised softmax weights in `scratch.candidates` and returns the weights' sum. `logits`
/// is overwritten with the shifted, temperature-scaled values.
fn filter(params: &SamplingParams, logits: &mut [f32], scratch: &mut Scratch) -> Result<f64> {
    let candidates = &mut scratch.candidates;
    candidates.clear();
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::INFINITY {
        // Infinite logits dominate everything else: share the probability among them.
        candidates.extend(
            (0..logits.len()).filter(|&i| logits[i] == f32::INFINITY).map(|i| Candidate { value: 0.0, id: i as u32, weight: 1.0 }),
        );
        return Ok(candidates.len() as f64);
    }
    if max == f32::NEG_INFINITY {
        return Err(EngineError::InvalidSampling("every logit is -inf or NaN".into()));
    }
    let temperature = params.temperature;
    for value in logits.iter_mut() {
        *value = (*value - max) / temperature;
    }
    let logits: &[f32] = logits;

    // Top-k as a value threshold; NaN and -inf never pass, the maximum (now 0) always does.
    let threshold = if params.top_k > 0 { kth_largest(logits, params.top_k, &mut scratch.top_values) } else { f32::NEG_INFINITY };
    candidates.extend(logits.iter().enumerate().filter(|(_, v)| **v > f32::NEG_INFINITY && **v >= threshold).map(|(i, &value)| {
        Candidate { value, id: i as u32, weight: portable_exp(value as f64) }
    }));

    if params.top_p < 1.0 && candidates.len() > 1 {
        let total: f64 = candidates.iter().map(|c| c.weight).sum();
        let threshold = nucleus_threshold(candidates, params.top_p as f64 * total);
        candidates.retain(|c| c.value >= threshold);
    }

    if params.min_p > 0.0 {
        // p_i >= min_p * p_max  ⟺  exp(value_i - value_max) >= min_p, and value_max is 0 here.
        let min_p = params.min_p as f64;
        candidates.retain(|c| c.weight >= min_p);
    }

    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(EngineError::InvalidSampling("no token left after filtering".into()));
    }
    Ok(total)
}

/// The k-th largest non-NaN value counted with multiplicity (`-inf` when there are fewer than
/// k), in one pass: a min-heap of the k best so far rejects most values with one comparison.
fn kth_largest(values: &[f32], k: usize, heap: &mut Vec<f32>) -> f32 {
    heap.clear();
    for &v in values {
        if v.is_nan() || v == f32::NEG_INFINITY {
            continue;
        }
        if heap.len() < k {
            heap.push(v);
            let last = heap.len() - 1;
            sift_up(heap, last);
        } else if v > heap[0] {
            heap[0] = v;
            sift_down(heap, 0);
        }
    }
    if heap.len() < k {
        f32::NEG_INFINITY
    } else {
        heap[0]
    }
}

fn sift_up(heap: &mut [f32], mut i: usize) {
    while i > 0 {
        let parent = (i - 1) / 2;
        if heap[i] >= heap[parent] {
            break;
        }
        heap.swap(i, parent);
        i = parent;
    }
}

fn sift_down(heap: &mut [f32], mut i: usize) {
    loop {
        let (left, right) = (2 * i + 1, 2 * i + 2);
        let mut smallest = i;
        if left < heap.len() && heap[left] < heap[smallest] {
            smallest = left;
        }
        if right < heap.len() && heap[right] < heap[smallest] {
            smallest = right;
        }
        if smallest == i {
            return;
        }
        heap.swap(i, smallest);
        i = smallest;
    }
}

/// Below this many candidates the nucleus search sorts instead of partitioning.
const SORT_BELOW: usize = 64;

/// Top-p as a value threshold: the value of the last token of the smallest most-likely prefix
/// whose weight reaches `target` (every token tied with it is kept too). A quickselect on
/// cumulative weight rather than on rank, so it costs O(n) instead of sorting the vocabulary.
/// Reorders `candidates`.
fn nucleus_threshold(candidates: &mut [Candidate], target: f64) -> f32 {
    let by_value_desc = |a: &Candidate, b: &Candidate| b.value.total_cmp(&a.value).then(a.id.cmp(&b.id));
    // candidates[..lo] lie above everything in the window and are all kept; `above` is their
    // weight. The round cap guards against pathological pivots.
    let (mut lo, mut hi, mut above) = (0, candidates.len(), 0.0);
    let mut rounds = 0;
    while hi - lo > SORT_BELOW && rounds < 64 {
        rounds += 1;
        let window = &mut candidates[lo..hi];
        let pivot = median_of_three(window[0].value, window[window.len() / 2].value, window[window.len() - 1].value);
        let (greater, equal) = partition_three_way(window, pivot);
        let greater_weight: f64 = window[..greater].iter().map(|c| c.weight).sum();
        // (An empty greater part must not count as reaching a zero target.)
        if greater > 0 && above + greater_weight >= target {
            hi = lo + greater;
            continue;
        }
        let equal_weight: f64 = window[greater..greater + equal].iter().map(|c| c.weight).sum();
        if above + greater_weight + equal_weight >= target {
            return pivot;
        }
        above += greater_weight + equal_weight;
        lo += greater + equal;
    }
    let window = &mut candidates[lo..hi];
    window.sort_unstable_by(by_value_desc);
    let mut cumulative = above;
    for c in window.iter() {
        cumulative += c.weight;
        if cumulative >= target {
            return c.value;
        }
    }
    // Rounding kept the sum just under the target: keep everything.
    f32::NEG_INFINITY
}

fn median_of_three(a: f32, b: f32, c: f32) -> f32 {
    a.max(b).min(a.min(b).max(c))
}

/// Rearranges `items` into [value > pivot | value == pivot | value < pivot] and returns the
/// lengths of the first two parts.
fn partition_three_way(items: &mut [Candidate], pivot: f32) -> (usize, usize) {
    let (mut greater_end, mut next, mut less_start) = (0, 0, items.len());
    while next < less_start {
        let value = items[next].value;
        if value > pivot {
            items.swap(greater_end, next);
            greater_end += 1;
            next += 1;
        } else if value < pivot {
            less_start -= 1;
            items.swap(next, less_start);
        } else {
            next += 1;
        }
    }
    (greater_end, less_start - greater_end)
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
            let rel = if std == 0.0 || std.is_infinite() { (ours != std) as u8 as f64 } else { ((ours - std) / std).abs() };
            assert!(rel < 1e-15 || (std < 1e-300 && (ours - std).abs() < 1e-310), "x={x}: {ours} vs {std}");
            x += 0.0137;
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
