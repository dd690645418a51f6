//! The one decoder implementation for qwen2 (q/k/v bias), qwen3 (per-head q/k RMSNorm, free
//! head_dim), and llama (SmolLM2), with GQA and tied or separate output. It loads weights from any
//! `WeightSource` into device buffers and records each forward pass as a list of kernel `Op`s.

use crate::config::{ModelConfig, RopeStyle};
use crate::device::{read_f32, read_u32, BufferId, BufferKind, Device, ReadTicket};
use crate::error::{EngineError, Result};
use crate::kernels::{
    attention_splits_for, reference::rope_table, ArgmaxParams, AttentionParams, TopKParams, EmbedParams, MatMulParams, Op, RmsNormParams,
    RopeAttentionParams, RopeKvWriteParams, SwiGluParams, WeightBuf,
};
use crate::quant::{self, GgmlType};
use crate::weights::{AsyncWeightSource, Immediate, SourceFormat, WeightSource};

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

/// One row range of a weight matrix, in its own device buffer.
#[derive(Debug, Clone, Copy)]
struct WeightPart {
    first_row: u32,
    w: WeightBuf,
    /// The bias entries of these rows (qwen2 q/k/v only).
    bias: Option<BufferId>,
}

/// One tensor of a stacked weight (`Loader::stacked`).
struct Member {
    name: Name,
    rows: usize,
    bias: Option<Name>,
}

/// Consecutive stacked tensors of one format, uploaded together.
struct Group<'a> {
    ty: GgmlType,
    /// Output column of the group's first row.
    first_row: usize,
    rows: usize,
    label: String,
    data: Vec<std::borrow::Cow<'a, [u8]>>,
    bias: Option<Vec<f32>>,
}

/// A `[rows, cols]` weight matrix in parts, each in its own device buffer and run as its own op
/// writing its own output columns: one part, unless the matrix is larger than the binding limit
/// (a 151936-row vocabulary) or stacks tensors of different formats (q|k|v where v is Q6_K).
#[derive(Debug, Clone)]
struct Linear {
    rows: u32,
    parts: Vec<WeightPart>,
}

struct Layer {
    attn_norm: BufferId,
    /// q, k and v stacked: `[q_dim + 2 kv_dim, hidden]`; biases on qwen2.
    qkv: Linear,
    /// (q, k) per-head norms, qwen3 only.
    qk_norm: Option<(BufferId, BufferId)>,
    attn_out: Linear,
    ffn_norm: BufferId,
    /// gate and up stacked: `[2 intermediate, hidden]`, gate first.
    gate_up: Linear,
    down: Linear,
    k_cache: BufferId,
    v_cache: BufferId,
}

/// Pre-allocated activations for one chunk of `chunk` tokens.
struct Activations {
    ids: BufferId,
    /// The residual stream, in two buffers: each AddRmsNorm reads one and writes the other
    /// (its one-row kernel reads the whole row from several workgroups, so not in place).
    hidden: [BufferId; 2],
    normed: BufferId,
    /// `[chunk, q_dim + 2 kv_dim]`: the stacked q|k|v projection.
    qkv: BufferId,
    /// `[chunk, q_dim]`: normalised, rotated queries.
    q: BufferId,
    attn: BufferId,
    proj: BufferId,
    /// `[chunk, 2 intermediate]`: the stacked gate|up projection.
    gate_up: BufferId,
    act: BufferId,
    logits: BufferId,
    /// One u32: the argmax of the last logits row (greedy decoding reads back 4 bytes).
    argmax: BufferId,
    /// `TOP_K_MAX` (id, value bits) places of the last logits row (top-k sampling reads 512 bytes).
    top_k: BufferId,
    rope: BufferId,
}

pub struct Model {
    cfg: ModelConfig,
    opts: ModelOptions,
    embed: Linear,
    output: Linear,
    output_norm: BufferId,
    layers: Vec<Layer>,
    act: Activations,
}

/// Loads tensors one at a time into device buffers, checking names and shapes.
struct Loader<'a> {
    device: &'a mut dyn Device,
    source: &'a dyn AsyncWeightSource,
    progress: &'a mut dyn FnMut(LoadProgress),
    state: LoadProgress,
}

impl<'a> Loader<'a> {
    fn name(&self, name: Name, layer: usize) -> String {
        tensor_name(self.source.format(), name, layer)
    }

    /// A tensor's metadata and bytes; the bytes borrow the source, not the loader.
    async fn bytes_of(&self, name: &str) -> Result<(crate::weights::TensorMeta, std::borrow::Cow<'a, [u8]>)> {
        let source: &'a dyn AsyncWeightSource = self.source;
        let meta = source.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?.clone();
        let bytes = source.tensor_bytes(name).await?;
        Ok((meta, bytes))
    }

    /// Bytes a tensor occupies in the file: progress is reported in file bytes, whatever the
    /// device layout.
    fn stored_bytes(&self, name: &str) -> u64 {
        self.source.tensor(name).map_or(0, stored_bytes)
    }

    fn advance(&mut self, bytes: u64) {
        self.state.tensors_done += 1;
        self.state.bytes_done += bytes;
        (self.progress)(self.state);
    }

    fn has(&self, name: Name, layer: usize) -> bool {
        self.source.tensor(&self.name(name, layer)).is_some()
    }

    /// A 1-D f32 vector (norm weight) of length `len`.
    async fn vector(&mut self, name: Name, layer: usize, len: usize) -> Result<BufferId> {
        let full = self.name(name, layer);
        let values = self.vector_values(name, layer, len).await?;
        let buf = self.device.alloc(BufferKind::Weights, &full, (len * 4) as u64)?;
        self.device.write(buf, 0, bytemuck::cast_slice(&values))?;
        self.advance(self.stored_bytes(&full));
        Ok(buf)
    }

    /// A `[rows, cols]` matrix (with its `[rows]` bias, if any): `stacked` with one member.
    async fn matrix(&mut self, name: Name, layer: usize, rows: usize, cols: usize, bias: Option<Name>) -> Result<Linear> {
        self.stacked(&[Member { name, rows, bias }], cols, layer).await
    }

    /// Weights that read the same input, stacked by rows into one `[sum of rows, cols]` matrix
    /// (q|k|v, gate|up), so that one matmul computes them all. Consecutive members of one format
    /// whose packed rows fit a binding share a device buffer (one op); the others become further
    /// parts of the same `Linear`, each writing its own output columns. A single tensor larger
    /// than the binding limit (a 151936-row vocabulary) is split by rows. Layouts are repacked
    /// for the device; bf16 is widened to f32.
    async fn stacked(&mut self, members: &[Member], cols: usize, layer: usize) -> Result<Linear> {
        let limit = self.device.info().max_binding_bytes;
        let mut parts = Vec::new();
        let mut group: Option<Group<'a>> = None;
        let mut first_row = 0usize;
        for m in members {
            let full = self.name(m.name, layer);
            let (meta, bytes) = self.bytes_of(&full).await?;
            if meta.shape != [m.rows, cols] {
                return Err(EngineError::ShapeMismatch { name: full, expected: vec![m.rows, cols], found: meta.shape });
            }
            if meta.ty.block_elems() > 1 && !cols.is_multiple_of(meta.ty.block_elems()) {
                return Err(EngineError::BadTensor {
                    name: full,
                    detail: format!("{cols} columns is not a multiple of the {} block", meta.ty.name()),
                });
            }
            let format = if meta.ty == GgmlType::BF16 { GgmlType::F32 } else { meta.ty };
            format.ensure_supported()?;
            let disk_row = meta.ty.row_bytes(cols)?;
            if bytes.len() != disk_row * m.rows {
                return Err(EngineError::BadTensor {
                    name: full,
                    detail: format!("{} bytes of data for {} rows of {disk_row} bytes", bytes.len(), m.rows),
                });
            }
            let bias = match m.bias {
                Some(b) => Some(self.vector_values(b, layer, m.rows).await?),
                None => None,
            };
            let joins = group.as_ref().is_some_and(|g| {
                g.ty == meta.ty && quant::packed_len(format, (g.rows + m.rows) * (cols / format.block_elems())) as u64 <= limit
            });
            if !joins {
                if let Some(g) = group.take() {
                    parts.extend(self.upload(g, cols)?);
                }
            }
            let g = group.get_or_insert_with(|| Group {
                ty: meta.ty,
                first_row,
                rows: 0,
                label: String::new(),
                data: Vec::new(),
                bias: None,
            });
            if bias.is_some() && g.bias.is_none() {
                g.bias = Some(vec![0.0; g.rows]);
            }
            if let Some(values) = &mut g.bias {
                values.extend(bias.unwrap_or_else(|| vec![0.0; m.rows]));
            }
            g.label = if g.label.is_empty() { full.clone() } else { format!("{}+{full}", g.label) };
            g.rows += m.rows;
            g.data.push(bytes);
            first_row += m.rows;
            self.advance(self.stored_bytes(&full));
            if let Some(b) = m.bias {
                let bias_name = self.name(b, layer);
                self.advance(self.stored_bytes(&bias_name));
            }
        }
        if let Some(g) = group.take() {
            parts.extend(self.upload(g, cols)?);
        }
        Ok(Linear { rows: first_row as u32, parts })
    }

    /// Writes a group of stacked rows to the device, split by rows into parts that fit the
    /// binding limit.
    fn upload(&mut self, g: Group<'a>, cols: usize) -> Result<Vec<WeightPart>> {
        let format = if g.ty == GgmlType::BF16 { GgmlType::F32 } else { g.ty };
        let limit = self.device.info().max_binding_bytes;
        let rows_per_part = rows_per_part(format, g.rows, cols, limit).ok_or_else(|| EngineError::BadTensor {
            name: g.label.clone(),
            detail: format!("one row of {cols} {} elements exceeds the device's binding limit of {limit} bytes", format.name()),
        })?;
        // One member borrows the source's bytes; several are joined (small: q|k|v, gate|up).
        let joined: std::borrow::Cow<[u8]> = match g.data.as_slice() {
            [one] => std::borrow::Cow::Borrowed(one.as_ref()),
            many => std::borrow::Cow::Owned(many.concat()),
        };
        let disk_row = g.ty.row_bytes(cols)?;
        let mut parts = Vec::new();
        for first in (0..g.rows).step_by(rows_per_part) {
            let n = rows_per_part.min(g.rows - first);
            let disk = &joined[first * disk_row..(first + n) * disk_row];
            let packed = if g.ty == GgmlType::BF16 {
                let mut values = vec![0f32; n * cols];
                quant::dequantize(GgmlType::BF16, disk, &mut values)?;
                let mut widened: Vec<u8> = bytemuck::cast_slice(&values).to_vec();
                widened.resize(quant::packed_len(GgmlType::F32, n * cols), 0);
                widened
            } else {
                quant::repack(format, disk)?
            };
            let label = if n == g.rows { g.label.clone() } else { format!("{}[{first}..{}]", g.label, first + n) };
            let buf = self.device.alloc(BufferKind::Weights, &label, packed.len() as u64)?;
            self.device.write(buf, 0, &packed)?;
            let bias = match &g.bias {
                Some(values) => {
                    let b = self.device.alloc(BufferKind::Weights, &format!("{label}.bias"), (n * 4) as u64)?;
                    self.device.write(b, 0, bytemuck::cast_slice(&values[first..first + n]))?;
                    Some(b)
                }
                None => None,
            };
            let w = WeightBuf { buf, format, rows: n as u32, cols: cols as u32 };
            parts.push(WeightPart { first_row: (g.first_row + first) as u32, w, bias });
        }
        Ok(parts)
    }

    /// The f32 values of a 1-D tensor of length `len`, on the host.
    async fn vector_values(&mut self, name: Name, layer: usize, len: usize) -> Result<Vec<f32>> {
        let full = self.name(name, layer);
        let (meta, bytes) = self.bytes_of(&full).await?;
        if meta.shape != [len] {
            return Err(EngineError::ShapeMismatch { name: full, expected: vec![len], found: meta.shape });
        }
        let mut values = vec![0f32; len];
        quant::dequantize(meta.ty, &bytes, &mut values)?;
        Ok(values)
    }
}

/// Most rows of a `[rows, cols]` weight whose packed layout fits in `limit` bytes (all rows when
/// the whole matrix fits); `None` when not even one row fits.
fn rows_per_part(format: GgmlType, rows: usize, cols: usize, limit: u64) -> Option<usize> {
    let blocks_per_row = cols / format.block_elems();
    let fits = |n: usize| quant::packed_len(format, n * blocks_per_row) as u64 <= limit;
    if fits(rows) {
        return Some(rows.max(1));
    }
    // Packed size is the disk size plus at most 15 padding bytes per segment: start from the
    // disk-size estimate and step down.
    let row_bytes = (blocks_per_row * format.block_bytes()).max(1) as u64;
    let mut n = (limit / row_bytes).min(rows as u64) as usize;
    while n > 0 && !fits(n) {
        n -= 1;
    }
    (n > 0).then_some(n)
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
        crate::session::now_or_never(Self::load_streamed(device, &Immediate(source), cfg, opts, progress))
            .unwrap_or_else(|| Err(EngineError::Device("a synchronous weight source did not complete at once".into())))
    }

    /// `load` from a source whose tensor reads wait (the browser's IndexedDB store): tensors are
    /// read one at a time, straight into device buffers.
    pub async fn load_streamed(
        device: &mut dyn Device,
        source: &dyn AsyncWeightSource,
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
        let bytes_total = source.tensors().iter().map(stored_bytes).sum();
        let tensors_total = source.tensors().len();
        let mut ld = Loader {
            device,
            source,
            progress,
            state: LoadProgress { tensors_done: 0, tensors_total, bytes_done: 0, bytes_total },
        };
        let (h, q_dim, kv_dim, inter) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
        let embed = ld.matrix(Name::Embed, 0, cfg.vocab_size, h, None).await?;
        let output_norm = ld.vector(Name::OutputNorm, 0, h).await?;
        // A GGUF or checkpoint may ship lm_head even when the config says tied; the file wins.
        let output =
            if ld.has(Name::Output, 0) { ld.matrix(Name::Output, 0, cfg.vocab_size, h, None).await? } else { embed.clone() };
        let bias = |name: Name| cfg.attention_bias.then_some(name);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let qk_norm = if cfg.qk_norm {
                Some((ld.vector(Name::QNorm, i, cfg.head_dim).await?, ld.vector(Name::KNorm, i, cfg.head_dim).await?))
            } else {
                None
            };
            let kv_bytes = (opts.context * kv_dim * 4) as u64;
            layers.push(Layer {
                attn_norm: ld.vector(Name::AttnNorm, i, h).await?,
                qkv: ld
                    .stacked(
                        &[
                            Member { name: Name::Q, rows: q_dim, bias: bias(Name::QBias) },
                            Member { name: Name::K, rows: kv_dim, bias: bias(Name::KBias) },
                            Member { name: Name::V, rows: kv_dim, bias: bias(Name::VBias) },
                        ],
                        h,
                        i,
                    )
                    .await?,
                qk_norm,
                attn_out: ld.matrix(Name::AttnOut, i, h, q_dim, None).await?,
                ffn_norm: ld.vector(Name::FfnNorm, i, h).await?,
                gate_up: ld
                    .stacked(
                        &[Member { name: Name::Gate, rows: inter, bias: None }, Member { name: Name::Up, rows: inter, bias: None }],
                        h,
                        i,
                    )
                    .await?,
                down: ld.matrix(Name::Down, i, h, inter, None).await?,
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
            hidden: [f32_buf("hidden", c * h)?, f32_buf("hidden (next)", c * h)?],
            normed: f32_buf("normed", c * h)?,
            qkv: f32_buf("qkv", c * (q_dim + 2 * kv_dim))?,
            q: f32_buf("q", c * q_dim)?,
            attn: f32_buf("attn", c * q_dim)?,
            proj: f32_buf("proj", c * h)?,
            gate_up: f32_buf("gate_up", c * 2 * inter)?,
            act: f32_buf("act", c * inter)?,
            logits: f32_buf("logits", logits_rows * cfg.vocab_size)?,
            argmax: f32_buf("argmax", 1)?,
            top_k: f32_buf("top_k", 2 * crate::kernels::TOP_K_MAX as usize)?,
            rope: f32_buf("rope_table", opts.context * cfg.head_dim)?,
        };
        let table = rope_table(cfg.rope_theta, cfg.head_dim, opts.context);
        device.write(act.rope, 0, bytemuck::cast_slice(&table))?;
        Ok(Self { cfg, opts, embed, output, output_norm, layers, act })
    }

    /// Records the ops of one forward pass over `n` tokens starting at position `pos`
    /// (token ids must already be in the ids buffer).
    pub fn record(&self, n: usize, pos: usize, logits: LogitsRows) -> Vec<Op> {
        self.record_from(self.act.ids, n, pos, logits)
    }

    /// `record` with the token ids read from `ids` (the argmax slot for chained decode passes).
    fn record_from(&self, ids: BufferId, n: usize, pos: usize, logits: LogitsRows) -> Vec<Op> {
        let cfg = &self.cfg;
        let a = &self.act;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let n32 = n as u32;
        let norm = |rows: usize, cols: usize| RmsNormParams { n_rows: rows as u32, n_cols: cols as u32, eps: cfg.rms_norm_eps };
        // residual_out = residual + proj, normalised into `normed`; the residual stream moves
        // to the other buffer.
        let mut residual = 0;
        let mut add_norm = |ops: &mut Vec<Op>, weight: BufferId| {
            ops.push(Op::AddRmsNorm {
                residual: a.hidden[residual],
                residual_out: a.hidden[1 - residual],
                x: a.proj,
                weight,
                out: a.normed,
                p: norm(n, h),
            });
            residual = 1 - residual;
        };
        // One op per weight part; part i writes output columns first_row .. first_row + rows.
        let matmul = |ops: &mut Vec<Op>, w: &Linear, x: BufferId, out: BufferId, m: u32, x_row: u32| {
            for part in &w.parts {
                ops.push(Op::MatMul {
                    w: part.w,
                    x,
                    bias: part.bias,
                    out,
                    p: MatMulParams {
                        m,
                        n: part.w.rows,
                        k: part.w.cols,
                        x_row,
                        has_bias: part.bias.is_some() as u32,
                        out_stride: w.rows,
                        out_col: part.first_row,
                    },
                });
            }
        };
        let linear = |ops: &mut Vec<Op>, w: &Linear, x: BufferId, out: BufferId| matmul(ops, w, x, out, n32, 0);
        let interleaved = cfg.rope_style == RopeStyle::Interleaved;
        let mut ops = Vec::with_capacity(cfg.n_layers * 16 + 4);
        // 1. Embedding.
        for part in &self.embed.parts {
            ops.push(Op::Embed {
                table: part.w,
                ids,
                out: a.hidden[0],
                p: EmbedParams { n_tokens: n32, hidden: h as u32, first_row: part.first_row, n_rows: part.w.rows },
            });
        }
        for (i, l) in self.layers.iter().enumerate() {
            // 2. Pre-attention norm; from layer 1 on it also adds the previous MLP output to the residual.
            if i == 0 {
                ops.push(Op::RmsNorm { x: a.hidden[0], weight: l.attn_norm, out: a.normed, p: norm(n, h) });
            } else {
                add_norm(&mut ops, l.attn_norm);
            }
            // 3. q/k/v projections, stacked: [n, h] -> [n, q_dim + 2 kv_dim].
            linear(&mut ops, &l.qkv, a.normed, a.qkv);
            // 4-6. Per-head q/k RMSNorm (qwen3), RoPE, k/v to the cache, causal GQA attention over
            // positions 0..pos+n; a decode token does it all in one op (RopeAttention).
            let rope = RopeKvWriteParams {
                n_tokens: n32,
                n_heads: cfg.n_heads as u32,
                n_kv_heads: cfg.n_kv_heads as u32,
                head_dim: cfg.head_dim as u32,
                pos_offset: pos as u32,
                qk_norm: l.qk_norm.is_some() as u32,
                eps: cfg.rms_norm_eps,
                _pad: 0,
            };
            let attention = AttentionParams {
                n_tokens: n32,
                n_heads: cfg.n_heads as u32,
                n_kv_heads: cfg.n_kv_heads as u32,
                head_dim: cfg.head_dim as u32,
                pos_offset: pos as u32,
                scale: 1.0 / (cfg.head_dim as f32).sqrt(),
                kv_splits: attention_splits_for(n32, (pos + n) as u32),
            };
            let (q_norm, k_norm) = (l.qk_norm.map(|(qn, _)| qn), l.qk_norm.map(|(_, kn)| kn));
            if RopeAttentionParams::fusable(&rope) {
                ops.push(Op::RopeAttention {
                    qkv: a.qkv,
                    table: a.rope,
                    q_norm,
                    k_norm,
                    k_cache: l.k_cache,
                    v_cache: l.v_cache,
                    out: a.attn,
                    p: RopeAttentionParams::from_parts(&rope, &attention, interleaved),
                });
            } else {
                ops.push(Op::RopeKvWrite {
                    qkv: a.qkv,
                    table: a.rope,
                    q_norm,
                    k_norm,
                    q_out: a.q,
                    k_cache: l.k_cache,
                    v_cache: l.v_cache,
                    interleaved,
                    p: rope,
                });
                ops.push(Op::Attention { q: a.q, k_cache: l.k_cache, v_cache: l.v_cache, out: a.attn, p: attention });
            }
            // 7. Output projection, residual add + post-attention norm.
            linear(&mut ops, &l.attn_out, a.attn, a.proj);
            add_norm(&mut ops, l.ffn_norm);
            // 8. SwiGLU MLP: down(silu(gate(x)) * up(x)).
            linear(&mut ops, &l.gate_up, a.normed, a.gate_up);
            ops.push(Op::SwiGlu { gate_up: a.gate_up, out: a.act, p: SwiGluParams { n_tokens: n32, width: inter as u32 } });
            linear(&mut ops, &l.down, a.act, a.proj);
        }
        // 9. Final residual add + norm, then logits for the requested rows.
        add_norm(&mut ops, self.output_norm);
        let (m, x_row) = match logits {
            LogitsRows::All => (n32, 0),
            LogitsRows::Last => (1, n32 - 1),
        };
        matmul(&mut ops, &self.output, a.normed, a.logits, m, x_row);
        ops
    }

    /// Runs `tokens` (at most one chunk) at positions `pos..pos+len` and returns their logits
    /// (`[1, vocab]` or `[len, vocab]`). The KV cache rows for these positions are overwritten.
    pub async fn forward(&self, device: &mut dyn Device, tokens: &[u32], pos: usize, rows: LogitsRows) -> Result<Vec<f32>> {
        self.check_forward(tokens, pos, rows)?;
        let n = tokens.len();
        device.write(self.act.ids, 0, bytemuck::cast_slice(tokens))?;
        device.run(&self.record(n, pos, rows))?;
        let out_rows = if rows == LogitsRows::All { n } else { 1 };
        read_f32(device, self.act.logits, 0, out_rows * self.cfg.vocab_size).await
    }

    fn check_forward(&self, tokens: &[u32], pos: usize, rows: LogitsRows) -> Result<()> {
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
        Ok(())
    }

    /// As [`Model::forward`] with [`LogitsRows::Last`], but the device also takes the argmax of
    /// the logits (lowest index on ties) and only that id is read back: greedy decoding without
    /// penalties copies 4 bytes per token instead of the whole vocabulary row.
    pub async fn forward_argmax(&self, device: &mut dyn Device, tokens: &[u32], pos: usize) -> Result<u32> {
        self.check_forward(tokens, pos, LogitsRows::Last)?;
        device.write(self.act.ids, 0, bytemuck::cast_slice(tokens))?;
        let mut ops = self.record(tokens.len(), pos, LogitsRows::Last);
        ops.push(Op::Argmax {
            x: self.act.logits,
            out: self.act.argmax,
            p: ArgmaxParams { n: self.cfg.vocab_size as u32, offset: 0 },
        });
        device.run(&ops)?;
        let id = read_u32(device, self.act.argmax, 0, 1).await?;
        id.first().copied().ok_or_else(|| EngineError::Device("argmax read back nothing".into()))
    }

    /// As [`Model::forward`] with [`LogitsRows::Last`], but the device also selects the
    /// `TOP_K_MAX` largest logits (`Op::TopK`) and only those (id, value) places are read back,
    /// largest first: sampling with a top-k filter copies 512 bytes per token instead of the
    /// vocabulary row (`Sampler::sample_from_top`; the row stays readable with `last_logits`).
    pub async fn forward_top_k(&self, device: &mut dyn Device, tokens: &[u32], pos: usize) -> Result<Vec<(u32, f32)>> {
        self.check_forward(tokens, pos, LogitsRows::Last)?;
        device.write(self.act.ids, 0, bytemuck::cast_slice(tokens))?;
        let mut ops = self.record(tokens.len(), pos, LogitsRows::Last);
        let k = crate::kernels::TOP_K_MAX;
        ops.push(Op::TopK { x: self.act.logits, out: self.act.top_k, p: TopKParams { n: self.cfg.vocab_size as u32, offset: 0, k } });
        device.run(&ops)?;
        let words = read_u32(device, self.act.top_k, 0, 2 * k as usize).await?;
        Ok(words.chunks_exact(2).map(|w| (w[0], f32::from_bits(w[1]))).collect())
    }

    /// The logits row of the last token of the last forward pass (of any kind).
    pub async fn last_logits(&self, device: &mut dyn Device) -> Result<Vec<f32>> {
        read_f32(device, self.act.logits, 0, self.cfg.vocab_size).await
    }

    /// Puts `token` where the next chained pass reads its input (the argmax slot).
    pub fn set_chain_token(&self, device: &mut dyn Device, token: u32) -> Result<()> {
        if token as usize >= self.cfg.vocab_size {
            return Err(EngineError::Tokenizer(format!("token id {token} outside the vocabulary of {}", self.cfg.vocab_size)));
        }
        device.write(self.act.argmax, 0, &token.to_le_bytes())
    }

    /// One greedy decode pass fed by the device: it embeds the id in the argmax slot (left there
    /// by the previous pass, or by `set_chain_token`), appends it at `pos` and takes the argmax of
    /// the new logits into the same slot. The returned ticket yields that id; the host can record
    /// and submit the next pass without waiting for it, so the GPU never idles on the host.
    pub fn forward_argmax_chained(&self, device: &mut dyn Device, pos: usize) -> Result<ReadTicket> {
        if pos + 1 > self.opts.context {
            return Err(EngineError::ContextOverflow { prompt: pos + 1, context: self.opts.context });
        }
        let mut ops = self.record_from(self.act.argmax, 1, pos, LogitsRows::Last);
        ops.push(Op::Argmax {
            x: self.act.logits,
            out: self.act.argmax,
            p: ArgmaxParams { n: self.cfg.vocab_size as u32, offset: 0 },
        });
        device.run_then_read(&ops, self.act.argmax, 0, 4)
    }
}

fn stored_bytes(t: &crate::weights::TensorMeta) -> u64 {
    t.ty.row_bytes(t.n_elements()).map_or(0, |b| b as u64)
}

impl Linear {
    /// Packed bytes of all parts on the device.
    fn packed_bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|part| {
                let blocks = part.w.rows as usize * part.w.cols as usize / part.w.format.block_elems();
                quant::packed_len(part.w.format, blocks) as u64
            })
            .sum()
    }
}

impl Model {
    /// Weight bytes one decode step reads: every projection and the output head once (the
    /// embedding gathers a single row). Benchmarks divide it by the step time for effective GB/s.
    pub fn decode_weight_bytes(&self) -> u64 {
        let per_layer = |l: &Layer| {
            [&l.qkv, &l.attn_out, &l.gate_up, &l.down].iter().map(|m| m.packed_bytes()).sum::<u64>()
        };
        self.output.packed_bytes() + self.layers.iter().map(per_layer).sum::<u64>()
    }
}
