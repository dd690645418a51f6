//! The generation loop: prefill, then sample/decode until a stop condition, streaming text that is
//! always valid UTF-8 and never shows a stop string (text that might start one is held back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::now_ms;
use crate::error::Result;
use crate::sampling::{Sampler, SamplingParams};
use crate::session::Session;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end the answer (the tokenizer's EOS set by default).
    pub stop_tokens: Vec<u32>,
    /// Strings that end the answer; the text is cut before them.
    pub stop_strings: Vec<String>,
    /// Keep going past stop tokens (parity runs that compare full sequences).
    pub ignore_stop_tokens: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingParams::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            ignore_stop_tokens: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    StopString,
    MaxTokens,
    ContextFull,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated_tokens: usize,
}

impl Timings {
    pub fn prefill_tok_per_s(&self) -> f64 {
        rate(self.prompt_tokens - self.reused_tokens, self.prefill_ms)
    }
    /// Decode rate over the tokens after the first (whose logits came from prefill).
    pub fn decode_tok_per_s(&self) -> f64 {
        rate(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn rate(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1e3 / ms
    } else {
        0.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    /// The answer text (stop token/string excluded).
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

/// Shared flag to stop a generation from another task or thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// One streamed step: the sampled id and the text it completed (possibly empty).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent<'a> {
    pub id: u32,
    pub text: &'a str,
}

/// Holds back streamed text that could still turn into a stop string.
struct StopScanner {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopScanner {
    /// Adds text; returns (text now safe to show, whether a stop string was found).
    fn push(&mut self, piece: &str) -> (String, bool) {
        let search_from = self.emitted.saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| find_from(&self.text, s, search_from))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            return (self.take_until(at), true);
        }
        // Longest suffix that is a proper prefix of some stop string stays pending.
        let pending = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let safe = self.text.len() - pending;
        (self.take_until(safe), false)
    }

    fn take_until(&mut self, end: usize) -> String {
        let end = end.max(self.emitted);
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        out
    }

    fn finish(&mut self) -> String {
        self.take_until(self.text.len())
    }
}

fn find_from(haystack: &str, needle: &str, from: usize) -> Option<usize> {
    let mut start = from.min(haystack.len());
    while !haystack.is_char_boundary(start) {
        start -= 1;
    }
    haystack[start..].find(needle).map(|i| start + i)
}

/// Generates an answer to `prompt_ids`, streaming each token through `on_token`.
pub async fn generate(
    session: &mut Session,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    cancel: Option<&CancelToken>,
    on_token: &mut dyn FnMut(TokenEvent<'_>),
) -> Result<Generation> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    // Special tokens (end-of-turn markers kept by --no-stop runs) are not part of the answer text.
    let mut detok = tokenizer.detokenizer(true);
    let mut scanner = StopScanner { stops: opts.stop_strings.clone(), text: String::new(), emitted: 0 };
    let mut timings = Timings { prompt_tokens: prompt_ids.len(), ..Timings::default() };

    // Greedy without penalties: the device takes the argmax and only the id is read back.
    // Top-k sampling without penalties on a GPU: the device selects the largest logits and the
    // host samples from those (the same token as from the row; the row only when they can't
    // decide). Devices in host memory hand over the row for the price of a copy.
    let on_device = opts.sampling.is_plain_argmax();
    let top_on_device = opts.sampling.device_top_k().is_some() && !session.device().info().host_memory;
    let vocab = session.model().config().vocab_size;
    let t0 = now_ms();
    let (mut logits, mut next, mut top) = if on_device {
        let (id, reused, _) = session.prefill_argmax(prompt_ids).await?;
        timings.reused_tokens = reused;
        (Vec::new(), Some(id), None)
    } else if top_on_device {
        let (places, reused, _) = session.prefill_top_k(prompt_ids).await?;
        timings.reused_tokens = reused;
        (Vec::new(), None, Some(places))
    } else {
        let prefill = session.prefill(prompt_ids).await?;
        timings.reused_tokens = prefill.reused;
        (prefill.logits, None, None)
    };
    timings.prefill_ms = now_ms() - t0;

    let mut generated = Vec::new();
    let mut history: Vec<u32> = prompt_ids.to_vec();
    let t1 = now_ms();
    let stop_reason = loop {
        if cancel.is_some_and(|c| c.is_cancelled()) {
            break StopReason::Cancelled;
        }
        if generated.len() >= opts.max_tokens {
            break StopReason::MaxTokens;
        }
        let from_top = match (next.take(), top.take()) {
            (Some(id), _) => Some(id),
            (None, Some(places)) => sampler.sample_from_top(&places, vocab)?,
            (None, None) => None,
        };
        let id = match from_top {
            Some(id) => id,
            None => {
                if top_on_device {
                    logits = session.last_logits().await?;
                }
                sampler.sample_with_prompt(&mut logits, &history, prompt_ids.len())?
            }
        };
        generated.push(id);
        history.push(id);
        if !opts.ignore_stop_tokens && opts.stop_tokens.contains(&id) {
            break StopReason::StopToken;
        }
        let piece = detok.push(id)?.unwrap_or_default();
        let (visible, hit_stop) = scanner.push(&piece);
        on_token(TokenEvent { id, text: &visible });
        if hit_stop {
            break StopReason::StopString;
        }
        if generated.len() >= opts.max_tokens {
            break StopReason::MaxTokens;
        }
        if session.cached_tokens().len() >= session.context() {
            break StopReason::ContextFull;
        }
        if on_device {
            next = Some(session.append_argmax_pipelined(id, crate::session::DECODE_PIPELINE_DEPTH).await?);
        } else if top_on_device {
            top = Some(session.append_top_k(id).await?);
        } else {
            logits = session.append(id).await?;
        }
    };
    timings.decode_ms = now_ms() - t1;
    timings.generated_tokens = generated.len();
    if stop_reason != StopReason::StopString {
        let tail = detok.finish()?.unwrap_or_default();
        let (mut visible, _) = scanner.push(&tail);
        visible.push_str(&scanner.finish());
        if !visible.is_empty() {
            on_token(TokenEvent { id: *generated.last().unwrap_or(&0), text: &visible });
        }
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids: generated,
        text: scanner.text,
        stop_reason,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut s = StopScanner { stops: stops.iter().map(|s| s.to_string()).collect(), text: String::new(), emitted: 0 };
        let mut out = Vec::new();
        for p in pieces {
            let (v, hit) = s.push(p);
            out.push(v);
            if hit {
                return (out, true, s.text.clone());
            }
        }
        out.push(s.finish());
        (out, false, s.text.clone())
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_shown() {
        let (out, hit, text) = scan(&["</end>"], &["Hello </", "en", "d> tail"]);
        assert!(hit);
        assert_eq!(text, "Hello ");
        assert_eq!(out.concat(), "Hello ");
        assert_eq!(out[0], "Hello ", "the possible stop prefix `</` is held back");
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop() {
        let (out, hit, text) = scan(&["STOP"], &["ab S", "T", "x done"]);
        assert!(!hit);
        assert_eq!(out[0], "ab ");
        assert_eq!(out.concat(), "ab STx done");
        assert_eq!(text, "ab STx done");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (_, hit, text) = scan(&["zz", "b"], &["a", "bzz"]);
        assert!(hit);
        assert_eq!(text, "a");
    }

    #[test]
    fn multibyte_stop_prefixes_do_not_split_chars() {
        let (out, hit, text) = scan(&["日本"], &["x日", "本y"]);
        assert!(hit);
        assert_eq!(text, "x");
        assert_eq!(out.concat(), "x");
    }
}
