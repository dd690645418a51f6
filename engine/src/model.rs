//! The one decoder implementation for qwen2 (q/k/v bias), qwen3 (per-head q/k RMSNorm, free
//! head_dim), and llama (SmolLM2), with GQA and tied or separate output. It loads weights from any
//! `WeightSource` into device buffers and records each forward pass as a list of kernel `Op`s.

use crate::config::{ModelConfig, RopeStyle};
use crate::device::{read_f32, BufferId, BufferKind, Device};
use crate::error::{EngineError, Result};
use crate::kernels::{
    reference::rope_table, AttentionParams, ElementwiseParams, EmbedParams, KvWriteParams, MatMulParams, Op,
    RmsNormParams, RopeParams, WeightBuf,
};
use crate::quant::{self, GgmlType};
use crate::weights::{SourceFormat, WeightSource};

/// Sizes fixed at load time: every buffer is allocated once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOptions {
    /// KV cache length in tokens (clamped to the model's maximum context).
    pub context: usize,
    /// Most tokens processed in one forward pass; longer prompts are prefilled in chunks.
    pub chunk: usize,
    /// Keep logits for every row of a chunk (parity tests) rather than only the last.
    pub all_logits: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self { context: 4096, chunk: 256, all_logits: false }
    }
}

/// Which logits a forward pass produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsRows {
    Last,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Logical weight names; each source format spells them its own way.
#[derive(Debug, Clone, Copy)]
enum Name {
    Embed,
    OutputNorm,
    Output,
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    AttnOut,
    FfnNorm,
    Gate,
    Up,
    Down,
}

fn tensor_name(format: SourceFormat, name: Name, layer: usize) -> String {
    use Name::*;
    match format {
        SourceFormat::Gguf => {
            let l = |s: &str| format!("blk.{layer}.{s}");
            match name {
                Embed => "token_embd.weight".into(),
                OutputNorm => "output_norm.weight".into(),
                Output => "output.weight".into(),
                AttnNorm => l("attn_norm.weight"),
                Q => l("attn_q.weight"),
                K => l("attn_k.weight"),
                V => l("attn_v.weight"),
                QBias => l("attn_q.bias"),
                KBias => l("attn_k.bias"),
                VBias => l("attn_v.bias"),
                QNorm => l("attn_q_norm.weight"),
                KNorm => l("attn_k_norm.weight"),
                AttnOut => l("attn_output.weight"),
                FfnNorm => l("ffn_norm.weight"),
                Gate => l("ffn_gate.weight"),
                Up => l("ffn_up.weight"),
                Down => l("ffn_down.weight"),
            }
        }
        SourceFormat::Safetensors => {
            let l = |s: &str| format!("model.layers.{layer}.{s}");
            match name {
                Embed => "model.embed_tokens.weight".into(),
                OutputNorm => "model.norm.weight".into(),
                Output => "lm_head.weight".into(),
                AttnNorm => l("input_layernorm.weight"),
                Q => l("self_attn.q_proj.weight"),
                K => l("self_attn.k_proj.weight"),
                V => l("self_attn.v_proj.weight"),
                QBias => l("self_attn.q_proj.bias"),
                KBias => l("self_attn.k_proj.bias"),
                VBias => l("self_attn.v_proj.bias"),
                QNorm => l("self_attn.q_norm.weight"),
                KNorm => l("self_attn.k_norm.weight"),
                AttnOut => l("self_attn.o_proj.weight"),
                FfnNorm => l("post_attention_layernorm.weight"),
                Gate => l("mlp.gate_proj.weight"),
                Up => l("mlp.up_proj.weight"),
                Down => l("mlp.down_proj.weight"),
            }
        }
    }
}

struct Layer {
    attn_norm: BufferId,
    q: WeightBuf,
    k: WeightBuf,
    v: WeightBuf,
    /// (q, k, v) biases, qwen2 only.
    qkv_bias: Option<(BufferId, BufferId, BufferId)>,
    /// (q, k) per-head norms, qwen3 only.
    qk_norm: Option<(BufferId, BufferId)>,
    attn_out: WeightBuf,
    ffn_norm: BufferId,
    gate: WeightBuf,
    up: WeightBuf,
    down: WeightBuf,
    k_cache: BufferId,
    v_cache: BufferId,
}

/// Pre-allocated activations for one chunk of `chunk` tokens.
struct Activations {
    ids: BufferId,
    hidden: BufferId,
    normed: BufferId,
    q: BufferId,
    k: BufferId,
    v: BufferId,
    q_normed: BufferId,
    k_normed: BufferId,
    attn: BufferId,
    proj: BufferId,
    gate: BufferId,
    up: BufferId,
    act: BufferId,
    logits: BufferId,
    rope: BufferId,
}

pub struct Model {
    cfg: ModelConfig,
    opts: ModelOptions,
    embed: WeightBuf,
    output: WeightBuf,
    output_norm: BufferId,
    layers: Vec<Layer>,
    act: Activations,
}

/// Loads tensors one at a time into device buffers, checking names and shapes.
struct Loader<'a> {
    device: &'a mut dyn Device,
    source: &'a dyn WeightSource,
    progress: &'a mut dyn FnMut(LoadProgress),
    state: LoadProgress,
}

impl Loader<'_> {
    fn name(&self, name: Name, layer: usize) -> String {
        tensor_name(self.source.format(), name, layer)
    }

    fn bytes_of(&self, name: &str) -> Result<(crate::weights::TensorMeta, std::borrow::Cow<'_, [u8]>)> {
        let meta = self.source.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?.clone();
        let bytes = self.source.tensor_bytes(name)?;
        Ok((meta, bytes))
    }

    fn advance(&mut self, bytes: u64) {
        self.state.tensors_done += 1;
        self.state.bytes_done += bytes;
        (self.progress)(self.state);
    }

    fn has(&self, name: Name, layer: usize) -> bool {
        self.source.tensor(&self.name(name, layer)).is_some()
    }

    /// A 1-D f32 vector (norm weight or bias) of length `len`.
    fn vector(&mut self, name: Name, layer: usize, len: usize) -> Result<BufferId> {
        let full = self.name(name, layer);
        let (meta, bytes) = self.bytes_of(&full)?;
        if meta.shape != [len] {
            return Err(EngineError::ShapeMismatch { name: full, expected: vec![len], found: meta.shape });
        }
        let mut values = vec![0f32; len];
        quant::dequantize(meta.ty, &bytes, &mut values)?;
        drop(bytes);
        let buf = self.device.alloc(BufferKind::Weights, &full, (len * 4) as u64)?;
        self.device.write(buf, 0, bytemuck::cast_slice(&values))?;
        self.advance((len * 4) as u64);
        Ok(buf)
    }

    /// A `[rows, cols]` matrix, repacked into its device layout (bf16 is widened to f32).
    fn matrix(&mut self, name: Name, layer: usize, rows: usize, cols: usize) -> Result<WeightBuf> {
        let full = self.name(name, layer);
        let (meta, bytes) = self.bytes_of(&full)?;
        if meta.shape != [rows, cols] {
            return Err(EngineError::ShapeMismatch { name: full, expected: vec![rows, cols], found: meta.shape });
        }
        let (format, packed) = match meta.ty {
            GgmlType::BF16 => {
                let mut values = vec![0f32; rows * cols];
                quant::dequantize(GgmlType::BF16, &bytes, &mut values)?;
                (GgmlType::F32, bytemuck::cast_slice(&values).to_vec())
            }
            ty => {
                if ty.block_elems() > 1 && cols % ty.block_elems() != 0 {
                    return Err(EngineError::BadTensor {
                        name: full,
                        detail: format!("{cols} columns is not a multiple of the {} block", ty.name()),
                    });
                }
                (ty, quant::repack(ty, &bytes)?)
            }
        };
        drop(bytes);
        let buf = self.device.alloc(BufferKind::Weights, &full, packed.len() as u64)?;
        self.device.write(buf, 0, &packed)?;
        self.advance(packed.len() as u64);
        Ok(WeightBuf { buf, format, rows: rows as u32, cols: cols as u32 })
    }
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn options(&self) -> &ModelOptions {
        &self.opts
    }
    /// Tokens the KV cache can hold.
    pub fn context(&self) -> usize {
        self.opts.context
    }

    pub fn load(
        device: &mut dyn Device,
        source: &dyn WeightSource,
        cfg: ModelConfig,
        opts: ModelOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self> {
        cfg.validate()?;
        let opts = ModelOptions {
            context: opts.context.clamp(1, cfg.max_context),
            chunk: opts.chunk.clamp(1, opts.context.clamp(1, cfg.max_context)),
            ..opts
        };
        let bytes_total = source.tensors().iter().map(|t| t.n_elements() as u64 * 4).sum();
        let tensors_total = source.tensors().len();
        let mut ld = Loader {
            device,
            source,
            progress,
            state: LoadProgress { tensors_done: 0, tensors_total, bytes_done: 0, bytes_total },
        };
        let (h, q_dim, kv_dim, inter) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
        let embed = ld.matrix(Name::Embed, 0, cfg.vocab_size, h)?;
        let output_norm = ld.vector(Name::OutputNorm, 0, h)?;
        // A GGUF or checkpoint may ship lm_head even when the config says tied; the file wins.
        let output = if ld.has(Name::Output, 0) { ld.matrix(Name::Output, 0, cfg.vocab_size, h)? } else { embed };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let qkv_bias = if cfg.attention_bias {
                Some((
                    ld.vector(Name::QBias, i, q_dim)?,
                    ld.vector(Name::KBias, i, kv_dim)?,
                    ld.vector(Name::VBias, i, kv_dim)?,
                ))
            } else {
                None
            };
            let qk_norm = if cfg.qk_norm {
                Some((ld.vector(Name::QNorm, i, cfg.head_dim)?, ld.vector(Name::KNorm, i, cfg.head_dim)?))
            } else {
                None
            };
            let kv_bytes = (opts.context * kv_dim * 4) as u64;
            layers.push(Layer {
                attn_norm: ld.vector(Name::AttnNorm, i, h)?,
                q: ld.matrix(Name::Q, i, q_dim, h)?,
                k: ld.matrix(Name::K, i, kv_dim, h)?,
                v: ld.matrix(Name::V, i, kv_dim, h)?,
                qkv_bias,
                qk_norm,
                attn_out: ld.matrix(Name::AttnOut, i, h, q_dim)?,
                ffn_norm: ld.vector(Name::FfnNorm, i, h)?,
                gate: ld.matrix(Name::Gate, i, inter, h)?,
                up: ld.matrix(Name::Up, i, inter, h)?,
                down: ld.matrix(Name::Down, i, h, inter)?,
                k_cache: ld.device.alloc(BufferKind::KvCache, &format!("k_cache.{i}"), kv_bytes)?,
                v_cache: ld.device.alloc(BufferKind::KvCache, &format!("v_cache.{i}"), kv_bytes)?,
            });
        }
        let device = ld.device;
        let c = opts.chunk;
        let mut f32_buf = |label: &str, elems: usize| device.alloc(BufferKind::Activations, label, (elems * 4) as u64);
        let logits_rows = if opts.all_logits { c } else { 1 };
        let act = Activations {
            ids: f32_buf("ids", c)?,
            hidden: f32_buf("hidden", c * h)?,
            normed: f32_buf("normed", c * h)?,
            q: f32_buf("q", c * q_dim)?,
            k: f32_buf("k", c * kv_dim)?,
            v: f32_buf("v", c * kv_dim)?,
            q_normed: f32_buf("q_normed", c * q_dim)?,
            k_normed: f32_buf("k_normed", c * kv_dim)?,
            attn: f32_buf("attn", c * q_dim)?,
            proj: f32_buf("proj", c * h)?,
            gate: f32_buf("gate", c * inter)?,
            up: f32_buf("up", c * inter)?,
            act: f32_buf("act", c * inter)?,
            logits: f32_buf("logits", logits_rows * cfg.vocab_size)?,
            rope: f32_buf("rope_table", opts.context * cfg.head_dim)?,
        };
        let table = rope_table(cfg.rope_theta, cfg.head_dim, opts.context);
        device.write(act.rope, 0, bytemuck::cast_slice(&table))?;
        Ok(Self { cfg, opts, embed, output, output_norm, layers, act })
    }

    /// Records the ops of one forward pass over `n` tokens starting at position `pos`
    /// (token ids must already be in the ids buffer).
    pub fn record(&self, n: usize, pos: usize, logits: LogitsRows) -> Vec<Op> {
        let cfg = &self.cfg;
        let a = &self.act;
        let (h, q_dim, kv_dim, inter) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
        let n32 = n as u32;
        let norm = |rows: usize, cols: usize| RmsNormParams { n_rows: rows as u32, n_cols: cols as u32, eps: cfg.rms_norm_eps };
        let linear = |w: WeightBuf, x: BufferId, bias: Option<BufferId>, out: BufferId| Op::MatMul {
            w,
            x,
            bias,
            out,
            p: MatMulParams { m: n32, n: w.rows, k: w.cols, x_row: 0, has_bias: bias.is_some() as u32 },
        };
        let interleaved = cfg.rope_style == RopeStyle::Interleaved;
        let rope = |x: BufferId, heads: usize| Op::Rope {
            x,
            table: a.rope,
            interleaved,
            p: RopeParams { n_tokens: n32, n_heads: heads as u32, head_dim: cfg.head_dim as u32, pos_offset: pos as u32 },
        };

        let mut ops = Vec::with_capacity(cfg.n_layers * 16 + 4);
        // 1. Embedding.
        ops.push(Op::Embed { table: self.embed, ids: a.ids, out: a.hidden, p: EmbedParams { n_tokens: n32, hidden: h as u32 } });
        for (i, l) in self.layers.iter().enumerate() {
            // 2. Pre-attention norm; from layer 1 on it also adds the previous MLP output to the residual.
            if i == 0 {
                ops.push(Op::RmsNorm { x: a.hidden, weight: l.attn_norm, out: a.normed, p: norm(n, h) });
            } else {
                ops.push(Op::AddRmsNorm { residual: a.hidden, x: a.proj, weight: l.attn_norm, out: a.normed, p: norm(n, h) });
            }
            // 3. q/k/v projections: [n, h] -> [n, heads, head_dim].
            let (qb, kb, vb) = match l.qkv_bias {
                Some((q, k, v)) => (Some(q), Some(k), Some(v)),
                None => (None, None, None),
            };
            ops.push(linear(l.q, a.normed, qb, a.q));
            ops.push(linear(l.k, a.normed, kb, a.k));
            ops.push(linear(l.v, a.normed, vb, a.v));
            // 4. Per-head q/k RMSNorm (qwen3).
            let (q, k) = match l.qk_norm {
                Some((qn, kn)) => {
                    ops.push(Op::RmsNorm { x: a.q, weight: qn, out: a.q_normed, p: norm(n * cfg.n_heads, cfg.head_dim) });
                    ops.push(Op::RmsNorm { x: a.k, weight: kn, out: a.k_normed, p: norm(n * cfg.n_kv_heads, cfg.head_dim) });
                    (a.q_normed, a.k_normed)
                }
                None => (a.q, a.k),
            };
            // 5. RoPE, then append k/v to the cache.
            ops.push(rope(q, cfg.n_heads));
            ops.push(rope(k, cfg.n_kv_heads));
            ops.push(Op::KvWrite {
                k,
                v: a.v,
                k_cache: l.k_cache,
                v_cache: l.v_cache,
                p: KvWriteParams { n_tokens: n32, kv_dim: kv_dim as u32, pos_offset: pos as u32 },
            });
            // 6. Causal GQA attention over positions 0..pos+n.
            ops.push(Op::Attention {
                q,
                k_cache: l.k_cache,
                v_cache: l.v_cache,
                out: a.attn,
                p: AttentionParams {
                    n_tokens: n32,
                    n_heads: cfg.n_heads as u32,
                    n_kv_heads: cfg.n_kv_heads as u32,
                    head_dim: cfg.head_dim as u32,
                    pos_offset: pos as u32,
                    scale: 1.0 / (cfg.head_dim as f32).sqrt(),
                },
            });
            // 7. Output projection, residual add + post-attention norm.
            ops.push(linear(l.attn_out, a.attn, None, a.proj));
            ops.push(Op::AddRmsNorm { residual: a.hidden, x: a.proj, weight: l.ffn_norm, out: a.normed, p: norm(n, h) });
            // 8. SwiGLU MLP: down(silu(gate(x)) * up(x)).
            ops.push(linear(l.gate, a.normed, None, a.gate));
            ops.push(linear(l.up, a.normed, None, a.up));
            ops.push(Op::SwiGlu { gate: a.gate, up: a.up, out: a.act, p: ElementwiseParams { n: (n * inter) as u32 } });
            ops.push(linear(l.down, a.act, None, a.proj));
        }
        // 9. Final residual add + norm, then logits for the requested rows.
        ops.push(Op::AddRmsNorm { residual: a.hidden, x: a.proj, weight: self.output_norm, out: a.normed, p: norm(n, h) });
        let (m, x_row) = match logits {
            LogitsRows::All => (n32, 0),
            LogitsRows::Last => (1, n32 - 1),
        };
        ops.push(Op::MatMul {
            w: self.output,
            x: a.normed,
            bias: None,
            out: a.logits,
            p: MatMulParams { m, n: self.output.rows, k: self.output.cols, x_row, has_bias: 0 },
        });
        let _ = q_dim;
        ops
    }

    /// Runs `tokens` (at most one chunk) at positions `pos..pos+len` and returns their logits
    /// (`[1, vocab]` or `[len, vocab]`). The KV cache rows for these positions are overwritten.
    pub async fn forward(&self, device: &mut dyn Device, tokens: &[u32], pos: usize, rows: LogitsRows) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if n > self.opts.chunk {
            return Err(EngineError::Device(format!("forward of {n} tokens exceeds the chunk of {}", self.opts.chunk)));
        }
        if pos + n > self.opts.context {
            return Err(EngineError::ContextOverflow { prompt: pos + n, context: self.opts.context });
        }
        if rows == LogitsRows::All && !self.opts.all_logits && n > 1 {
            return Err(EngineError::Device("all-row logits need ModelOptions::all_logits".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(EngineError::Tokenizer(format!("token id {bad} outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        device.write(self.act.ids, 0, bytemuck::cast_slice(tokens))?;
        device.run(&self.record(n, pos, rows))?;
        let out_rows = if rows == LogitsRows::All { n } else { 1 };
        read_f32(device, self.act.logits, 0, out_rows * self.cfg.vocab_size).await
    }
}
