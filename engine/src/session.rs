//! A `Session` owns a device, a loaded model and its KV cache, and knows which tokens the cache
//! holds. Prefill reuses the longest cached prefix, so a chat turn only computes the new tokens.

use std::collections::VecDeque;

use crate::device::{Device, ReadTicket};
use crate::error::{EngineError, Result};
use crate::model::{LogitsRows, Model};

pub struct Session {
    device: Box<dyn Device>,
    model: Model,
    /// Tokens whose keys/values are in the cache, in position order.
    cached: Vec<u32>,
    /// Chained greedy passes submitted but not yet read, oldest first (`append_argmax_pipelined`).
    in_flight: VecDeque<ReadTicket>,
    /// (input token, position) of the oldest in-flight pass; the chain continues only from there.
    chain: Option<(u32, usize)>,
}

/// Greedy decode passes kept in flight by `generate`: enough for the host to record pass i+1
/// while the GPU runs pass i; more only wastes work when a stop token ends the answer.
pub const DECODE_PIPELINE_DEPTH: usize = 3;

/// What a prefill's last pass reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastRow {
    Logits,
    Argmax,
    TopK,
}

enum LastOutput {
    Logits(Vec<f32>),
    Argmax(u32),
    TopK(Vec<(u32, f32)>),
}

/// What a prefill did.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefill {
    /// Logits after the last prompt token.
    pub logits: Vec<f32>,
    /// Prompt tokens served from the cache (not recomputed).
    pub reused: usize,
    /// Prompt tokens computed.
    pub computed: usize,
}

impl Session {
    pub fn new(device: Box<dyn Device>, model: Model) -> Self {
        Self { device, model, cached: Vec::new(), in_flight: VecDeque::new(), chain: None }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }
    pub fn device(&self) -> &dyn Device {
        self.device.as_ref()
    }
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }
    pub fn context(&self) -> usize {
        self.model.context()
    }
    /// Forgets the cache contents (buffers stay allocated).
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Makes the cache hold exactly `tokens` and returns the logits after the last one.
    /// Policy: a prompt longer than the context is an error (`ContextOverflow`); callers that
    /// hold conversations drop old turns before calling (see `chat_session`).
    pub async fn prefill(&mut self, tokens: &[u32]) -> Result<Prefill> {
        let (last, reused, computed) = self.prefill_inner(tokens, LastRow::Logits).await?;
        let LastOutput::Logits(logits) = last else { return Err(EngineError::Device("prefill produced no logits".into())) };
        Ok(Prefill { logits, reused, computed })
    }

    /// As [`Session::prefill`], but returns the argmax of the last logits (computed on the device)
    /// instead of the logits: greedy decoding without penalties. Returns (id, reused, computed).
    pub async fn prefill_argmax(&mut self, tokens: &[u32]) -> Result<(u32, usize, usize)> {
        let (last, reused, computed) = self.prefill_inner(tokens, LastRow::Argmax).await?;
        let LastOutput::Argmax(id) = last else { return Err(EngineError::Device("prefill produced no argmax".into())) };
        Ok((id, reused, computed))
    }

    /// As [`Session::prefill`], but returns the `TOP_K_MAX` largest logits after the last token
    /// (`Model::forward_top_k`) instead of the row: sampling with top-k. Returns (places,
    /// reused, computed); `last_logits` reads the row when the places cannot decide.
    pub async fn prefill_top_k(&mut self, tokens: &[u32]) -> Result<(Vec<(u32, f32)>, usize, usize)> {
        let (last, reused, computed) = self.prefill_inner(tokens, LastRow::TopK).await?;
        let LastOutput::TopK(top) = last else { return Err(EngineError::Device("prefill produced no top-k".into())) };
        Ok((top, reused, computed))
    }

    /// Appends one token (decode step) and returns the `TOP_K_MAX` largest logits after it.
    pub async fn append_top_k(&mut self, token: u32) -> Result<Vec<(u32, f32)>> {
        self.drain().await;
        let pos = self.cached.len();
        if pos >= self.context() {
            return Err(EngineError::ContextOverflow { prompt: pos + 1, context: self.context() });
        }
        let top = self.model.forward_top_k(self.device.as_mut(), &[token], pos).await?;
        self.cached.push(token);
        Ok(top)
    }

    /// The logits row after the last token appended (by any prefill or append).
    pub async fn last_logits(&mut self) -> Result<Vec<f32>> {
        self.drain().await;
        self.model.last_logits(self.device.as_mut()).await
    }

    /// Prefill with `last` deciding what the last chunk's pass reads back; returns it with
    /// (reused, computed).
    async fn prefill_inner(&mut self, tokens: &[u32], last: LastRow) -> Result<(LastOutput, usize, usize)> {
        self.drain().await;
        if tokens.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if tokens.len() > self.context() {
            return Err(EngineError::ContextOverflow { prompt: tokens.len(), context: self.context() });
        }
        let common = self.cached.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        // The last token is always recomputed: its logits are the point of the call.
        let start = common.min(tokens.len() - 1);
        self.cached.truncate(start);
        let chunk = self.model.options().chunk;
        let mut output = LastOutput::Logits(Vec::new());
        let mut pos = start;
        while pos < tokens.len() {
            let end = (pos + chunk).min(tokens.len());
            let (device, part) = (self.device.as_mut(), &tokens[pos..end]);
            output = match last {
                LastRow::Argmax if end == tokens.len() => LastOutput::Argmax(self.model.forward_argmax(device, part, pos).await?),
                LastRow::TopK if end == tokens.len() => LastOutput::TopK(self.model.forward_top_k(device, part, pos).await?),
                _ => LastOutput::Logits(self.model.forward(device, part, pos, LogitsRows::Last).await?),
            };
            self.cached.extend_from_slice(part);
            pos = end;
        }
        Ok((output, start, tokens.len() - start))
    }

    /// Appends one token (decode step) and returns the logits after it.
    pub async fn append(&mut self, token: u32) -> Result<Vec<f32>> {
        self.drain().await;
        let pos = self.cached.len();
        if pos >= self.context() {
            return Err(EngineError::ContextOverflow { prompt: pos + 1, context: self.context() });
        }
        let logits = self.model.forward(self.device.as_mut(), &[token], pos, LogitsRows::Last).await?;
        self.cached.push(token);
        Ok(logits)
    }

    /// Appends one token (decode step) and returns the argmax of the logits after it, computed on
    /// the device (lowest id on ties): greedy decoding reads back one u32, not the vocabulary.
    pub async fn append_argmax(&mut self, token: u32) -> Result<u32> {
        self.drain().await;
        let pos = self.cached.len();
        if pos >= self.context() {
            return Err(EngineError::ContextOverflow { prompt: pos + 1, context: self.context() });
        }
        let id = self.model.forward_argmax(self.device.as_mut(), &[token], pos).await?;
        self.cached.push(token);
        Ok(id)
    }

    /// As [`Session::append_argmax`] (same result), but keeps up to `depth` chained passes in
    /// flight: each embeds its predecessor's argmax on the device, so recording and submitting
    /// the next pass overlaps the GPU work of this one. Call it again with the id it returned to
    /// continue the chain; any other call (or another token) first waits out and discards the
    /// passes in flight, whose cache writes lie past the accepted tokens and are overwritten later.
    pub async fn append_argmax_pipelined(&mut self, token: u32, depth: usize) -> Result<u32> {
        let pos = self.cached.len();
        if self.chain != Some((token, pos)) {
            self.drain().await;
        }
        if pos >= self.context() {
            return Err(EngineError::ContextOverflow { prompt: pos + 1, context: self.context() });
        }
        if self.in_flight.is_empty() {
            self.model.set_chain_token(self.device.as_mut(), token)?;
        }
        while self.in_flight.len() < depth.max(1) && pos + self.in_flight.len() < self.context() {
            let ticket = self.model.forward_argmax_chained(self.device.as_mut(), pos + self.in_flight.len())?;
            self.in_flight.push_back(ticket);
        }
        let Some(ticket) = self.in_flight.pop_front() else {
            return Err(EngineError::Device("no decode pass in flight".into()));
        };
        let bytes = self.device.redeem(ticket).await?;
        let id = bytes
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| EngineError::Device("argmax read back nothing".into()))?;
        self.cached.push(token);
        self.chain = (!self.in_flight.is_empty()).then_some((id, pos + 1));
        Ok(id)
    }

    /// Waits for and discards the chained passes in flight.
    async fn drain(&mut self) {
        self.chain = None;
        while let Some(ticket) = self.in_flight.pop_front() {
            // Only the waiting matters; an error here resurfaces on the next pass.
            let _ = self.device.redeem(ticket).await;
        }
    }

    /// Logits for every position of `tokens`, computed from an empty cache (parity tests).
    /// Needs `ModelOptions::all_logits`; prompts longer than a chunk are processed chunk by chunk.
    pub async fn logits_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.drain().await;
        if tokens.len() > self.context() {
            return Err(EngineError::ContextOverflow { prompt: tokens.len(), context: self.context() });
        }
        self.cached.clear();
        let chunk = self.model.options().chunk;
        let mut all = Vec::with_capacity(tokens.len() * self.model.config().vocab_size);
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let rows = if part.len() == 1 { LogitsRows::Last } else { LogitsRows::All };
            all.extend(self.model.forward(self.device.as_mut(), part, i * chunk, rows).await?);
            self.cached.extend_from_slice(part);
        }
        Ok(all)
    }
}

/// Polls a future once. Reference and simulator devices complete reads immediately, so their
/// async paths can be driven from synchronous code (beam search) without an executor.
pub fn now_or_never<F: std::future::Future>(fut: F) -> Option<F::Output> {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop_raw() -> RawWaker {
        fn clone(_: *const ()) -> RawWaker {
            noop_raw()
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    // SAFETY: the vtable functions ignore their (null) data pointer.
    let waker = unsafe { Waker::from_raw(noop_raw()) };
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Beam search over one KV cache: each beam is prefilled in turn, reusing whatever prefix it
/// shares with the previous one. Simple and exact; W caches would trade memory for speed.
impl crate::beam::BeamModel for Session {
    fn next_logits(&mut self, beams: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        beams
            .iter()
            .map(|beam| {
                now_or_never(self.prefill(beam))
                    .ok_or_else(|| EngineError::Device("beam search needs a device with synchronous read-back".into()))?
                    .map(|p| p.logits)
            })
            .collect()
    }
}
