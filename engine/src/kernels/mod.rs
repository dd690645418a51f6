//! The kernel boundary. A kernel is one WGSL file in `shaders/` (GPU), a `KernelId` + `#[repr(C)]`
//! params struct here, and a plain-Rust reference function in `reference.rs` with the same
//! semantics and buffer layouts. Model code records `Op`s; devices execute them.
//!
//! Buffer conventions (all devices): activations, norms weights, biases, KV cache and RoPE tables
//! are f32; token ids are u32; weights are in the packed layout of their `WeightFormat`
//! (see `quant.rs`). Matrices are row-major `[rows, cols]` with `cols` contiguous; a linear layer's
//! weight is `[n_out, k_in]` (PyTorch convention), so `y[m][n] = sum_k x[m][k] * w[n][k] + b[n]`.

pub mod reference;

use bytemuck::{Pod, Zeroable};

use crate::device::BufferId;
use crate::quant::GgmlType;

/// Element format of a weight as stored on a device.
pub type WeightFormat = GgmlType;

/// A weight matrix living in a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightBuf {
    pub buf: BufferId,
    pub format: WeightFormat,
    pub rows: u32,
    pub cols: u32,
}

/// Identifies a compiled kernel (one WGSL entry point / pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelId {
    /// Gather rows of a (possibly quantized) embedding table.
    Embed(WeightFormat),
    RmsNorm,
    /// `residual_out = residual + x; out = rmsnorm(residual_out) * w` in one pass.
    AddRmsNorm,
    /// Decode: one activation row times a weight matrix.
    MatVec(WeightFormat),
    /// Prefill: several activation rows (tiled on the GPU).
    MatMul(WeightFormat),
    /// Splits the fused q|k|v rows: per-head q/k RMSNorm (qwen3), RoPE on q and k, q to the
    /// attention input, k and v appended to the KV cache (NeoX or interleaved pairing).
    RopeKvWriteNeox,
    RopeKvWriteInterleaved,
    /// Causal attention over the KV cache (split-K with an online softmax on the GPU).
    Attention,
    /// Attention of one query token (decode) with head_dim a multiple of 4, up to
    /// `DECODE_MAX_HEAD_DIM`: 16-byte K/V loads, one key per thread.
    AttentionDecode,
    /// RopeKvWrite then AttentionDecode of one decode token, in one op (no q buffer, one
    /// dispatch fewer).
    RopeAttentionDecode,
    SwiGlu,
    Add,
    Argmax,
    /// The `TOP_K_MAX` largest logits with their ids (sampling with a top-k filter).
    TopK,
}

// ---- Parameter structs: exactly the uniform block each WGSL kernel declares. ----

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct EmbedParams {
    pub n_tokens: u32,
    pub hidden: u32,
    /// The table buffer holds vocabulary rows `first_row .. first_row + n_rows` (a table larger
    /// than the device's binding limit is split by rows into several parts and several ops).
    /// Tokens whose id falls outside that range are left untouched by this op.
    pub first_row: u32,
    pub n_rows: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RmsNormParams {
    pub n_rows: u32,
    pub n_cols: u32,
    pub eps: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct MatMulParams {
    /// Activation rows.
    pub m: u32,
    /// Output features (weight rows).
    pub n: u32,
    /// Input features (weight cols).
    pub k: u32,
    /// First activation row to read (element offset = x_row * k); lets logits use only the last row.
    pub x_row: u32,
    pub has_bias: u32,
    /// Elements between consecutive output rows (`n` for a whole weight).
    pub out_stride: u32,
    /// First output column written: a weight split by rows writes its parts side by side.
    pub out_col: u32,
}

impl MatMulParams {
    /// Params for a whole (unsplit) `[n, k]` weight.
    pub fn whole(m: u32, n: u32, k: u32, x_row: u32, has_bias: bool) -> Self {
        Self { m, n, k, x_row, has_bias: has_bias as u32, out_stride: n, out_col: 0 }
    }
}

/// Params of `Op::RopeKvWrite`. A qkv row of token t is `[q heads | k heads | v heads]`, each head
/// `head_dim` wide: `(n_heads + 2 * n_kv_heads) * head_dim` elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RopeKvWriteParams {
    pub n_tokens: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Position of the first token (row of the cos/sin table and of the KV cache).
    pub pos_offset: u32,
    /// 1 when q and k heads are RMS-normalised (with `q_norm` / `k_norm`) before RoPE.
    pub qk_norm: u32,
    pub eps: f32,
    pub _pad: u32,
}

impl RopeKvWriteParams {
    /// Elements of one token's fused q|k|v row.
    pub fn qkv_width(&self) -> u64 {
        (self.n_heads as u64 + 2 * self.n_kv_heads as u64) * self.head_dim as u64
    }
}

/// Params of `Op::RopeAttention`: a one-token `RopeKvWriteParams` and `AttentionParams` in one
/// uniform block (shaders/rope_attention_decode.wgsl).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RopeAttentionParams {
    /// Always 1.
    pub n_tokens: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Position of the token: row of the cos/sin table and of the KV cache; it attends to keys
    /// 0..=pos_offset.
    pub pos_offset: u32,
    pub scale: f32,
    pub kv_splits: u32,
    pub qk_norm: u32,
    pub eps: f32,
    /// 1 for interleaved RoPE pairs, 0 for NeoX.
    pub interleaved: u32,
    pub _pad: [u32; 2],
}

impl RopeAttentionParams {
    /// The two ops it stands for.
    pub fn from_parts(rope: &RopeKvWriteParams, attention: &AttentionParams, interleaved: bool) -> Self {
        Self {
            n_tokens: rope.n_tokens,
            n_heads: rope.n_heads,
            n_kv_heads: rope.n_kv_heads,
            head_dim: rope.head_dim,
            pos_offset: rope.pos_offset,
            scale: attention.scale,
            kv_splits: attention.kv_splits,
            qk_norm: rope.qk_norm,
            eps: rope.eps,
            interleaved: interleaved as u32,
            _pad: [0; 2],
        }
    }

    pub fn rope(&self) -> RopeKvWriteParams {
        RopeKvWriteParams {
            n_tokens: self.n_tokens,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            pos_offset: self.pos_offset,
            qk_norm: self.qk_norm,
            eps: self.eps,
            _pad: 0,
        }
    }

    pub fn attention(&self) -> AttentionParams {
        AttentionParams {
            n_tokens: self.n_tokens,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            pos_offset: self.pos_offset,
            scale: self.scale,
            kv_splits: self.kv_splits,
        }
    }

    /// Whether the fused kernel takes this shape (one token; a head the decode attention takes).
    pub fn fusable(rope: &RopeKvWriteParams) -> bool {
        rope.n_tokens == 1 && rope.head_dim % 4 == 0 && rope.head_dim <= DECODE_MAX_HEAD_DIM
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct SwiGluParams {
    pub n_tokens: u32,
    /// Elements of `out` per token; a `gate_up` row holds `2 * width` (gate first).
    pub width: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct AttentionParams {
    pub n_tokens: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Absolute position of the first query row; query i sees keys 0..=pos_offset+i.
    pub pos_offset: u32,
    pub scale: f32,
    /// Flash-decoding: the key range is cut into this many splits that GPUs process in parallel
    /// and then merge. Any value >= 1 gives the same result (the reference ignores it); see
    /// `attention_splits`.
    pub kv_splits: u32,
}

/// Keys per flash-decoding split that `attention_splits` aims for.
pub const KEYS_PER_SPLIT: u32 = 256;
/// Most splits per attention op (bounds the device's scratch of partial results).
pub const MAX_KV_SPLITS: u32 = 64;
/// Most splits `attention_splits` picks for a multi-token (prefill) op: its rows already fill the
/// GPU, and the scratch grows with tokens x splits.
pub const MAX_PREFILL_KV_SPLITS: u32 = 16;
/// Keys per split for a one-token (decode) op: n_heads x ctx / 64 workgroups (up to MAX_KV_SPLITS
/// splits); two 32-key tiles of attention_decode.wgsl `wide` at head_dim 128. H200, 32 / 64 / 128
/// keys (docs/PERF.md pass 8): Llama-3-8B decode 235.7 / 235.2 / 234.0 tok/s from an empty
/// context, 208.5 / 220.2 / 216.8 after a 512-token prompt; Qwen2.5-0.5B 605.5 / 615.6 / 617.2.
pub const DECODE_KEYS_PER_SPLIT: u32 = 64;

/// Largest head_dim of `KernelId::AttentionDecode` (shaders/attention_decode.wgsl).
pub const DECODE_MAX_HEAD_DIM: u32 = 256;

/// The split count for an attention op over `ctx` visible keys (prefill rule).
pub fn attention_splits(ctx: u32) -> u32 {
    ctx.div_ceil(KEYS_PER_SPLIT).clamp(1, MAX_PREFILL_KV_SPLITS)
}

/// The split count for an attention op of `n_tokens` query tokens over `ctx` visible keys: decode
/// (one token) cuts the keys finer, up to `MAX_KV_SPLITS`.
pub fn attention_splits_for(n_tokens: u32, ctx: u32) -> u32 {
    if n_tokens == 1 {
        ctx.div_ceil(DECODE_KEYS_PER_SPLIT).clamp(1, MAX_KV_SPLITS)
    } else {
        attention_splits(ctx)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct ArgmaxParams {
    pub n: u32,
    /// Element offset of the row to scan.
    pub offset: u32,
}

/// Most places a `TopK` op keeps (`LIST` of shaders/top_k.wgsl).
pub const TOP_K_MAX: u32 = 64;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct TopKParams {
    pub n: u32,
    /// Element offset of the row to scan.
    pub offset: u32,
    /// Places written, 1..=TOP_K_MAX.
    pub k: u32,
}

/// One recorded kernel dispatch with its named buffers.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `out[t][:] = dequant(table[ids[t] - first_row][:])` for the ids this table part holds.
    Embed { table: WeightBuf, ids: BufferId, out: BufferId, p: EmbedParams },
    /// `out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight`.
    RmsNorm { x: BufferId, weight: BufferId, out: BufferId, p: RmsNormParams },
    /// `residual_out = residual + x; out = rmsnorm(residual_out) * weight`. `residual_out` is a
    /// buffer apart from `residual` (the model swaps the two after each norm): a one-row norm
    /// runs over several workgroups, each of which reads the whole input row.
    AddRmsNorm { residual: BufferId, residual_out: BufferId, x: BufferId, weight: BufferId, out: BufferId, p: RmsNormParams },
    /// `out[m * out_stride + out_col + n] = sum_k x[x_row + m][k] * w[n][k] (+ bias[n])`.
    MatMul { w: WeightBuf, x: BufferId, bias: Option<BufferId>, out: BufferId, p: MatMulParams },
    /// From `qkv: [n_tokens, (n_heads + 2 n_kv_heads) * head_dim]` (the fused projections): each
    /// q and k head is RMS-normalised with `q_norm` / `k_norm` (`[head_dim]`, when given), then
    /// rotated with `table: [ctx, head_dim/2, 2] (cos, sin)` at position `pos_offset + t`;
    /// q goes to `q_out: [n_tokens, n_heads, head_dim]`, k and v to row `pos_offset + t` of the
    /// caches (`[ctx, n_kv_heads * head_dim]`).
    RopeKvWrite {
        qkv: BufferId,
        table: BufferId,
        q_norm: Option<BufferId>,
        k_norm: Option<BufferId>,
        q_out: BufferId,
        k_cache: BufferId,
        v_cache: BufferId,
        interleaved: bool,
        p: RopeKvWriteParams,
    },
    /// Causal GQA attention: `q: [n_tokens, n_heads, head_dim]` → `out` same shape.
    Attention { q: BufferId, k_cache: BufferId, v_cache: BufferId, out: BufferId, p: AttentionParams },
    /// `RopeKvWrite` (into a q row of its own) then `Attention` of one decode token (`p.rope()`,
    /// `p.attention()`): the k and v of the token go to cache row `pos_offset`, the attention
    /// output to `out: [n_heads, head_dim]`.
    RopeAttention {
        qkv: BufferId,
        table: BufferId,
        q_norm: Option<BufferId>,
        k_norm: Option<BufferId>,
        k_cache: BufferId,
        v_cache: BufferId,
        out: BufferId,
        p: RopeAttentionParams,
    },
    /// `out[t][j] = silu(gate_up[t][j]) * gate_up[t][width + j]` (gate and up projections fused).
    SwiGlu { gate_up: BufferId, out: BufferId, p: SwiGluParams },
    /// `a += b`.
    Add { a: BufferId, b: BufferId, p: ElementwiseParams },
    /// `out[0] = argmax(x[offset..offset+n])` (lowest index on ties), as u32.
    Argmax { x: BufferId, out: BufferId, p: ArgmaxParams },
    /// `out[2i], out[2i + 1]` = id and value bits of the i-th largest of `x[offset..offset+n]`
    /// (i < k; ties: lower id first; order of `reference::top_k_key`, NaN lowest); places past n
    /// hold (u32::MAX, a NaN).
    TopK { x: BufferId, out: BufferId, p: TopKParams },
}

impl Op {
    pub fn kernel_id(&self) -> KernelId {
        match self {
            Op::Embed { table, .. } => KernelId::Embed(table.format),
            Op::RmsNorm { .. } => KernelId::RmsNorm,
            Op::AddRmsNorm { .. } => KernelId::AddRmsNorm,
            Op::MatMul { w, p, .. } if p.m == 1 => KernelId::MatVec(w.format),
            Op::MatMul { w, .. } => KernelId::MatMul(w.format),
            Op::RopeKvWrite { interleaved: false, .. } => KernelId::RopeKvWriteNeox,
            Op::RopeKvWrite { interleaved: true, .. } => KernelId::RopeKvWriteInterleaved,
            Op::Attention { p, .. } if p.n_tokens == 1 && p.head_dim % 4 == 0 && p.head_dim <= DECODE_MAX_HEAD_DIM => {
                KernelId::AttentionDecode
            }
            Op::Attention { .. } => KernelId::Attention,
            Op::RopeAttention { .. } => KernelId::RopeAttentionDecode,
            Op::SwiGlu { .. } => KernelId::SwiGlu,
            Op::Add { .. } => KernelId::Add,
            Op::Argmax { .. } => KernelId::Argmax,
            Op::TopK { .. } => KernelId::TopK,
        }
    }

    /// The params struct as bytes, in the layout of the kernel's uniform block.
    pub fn params_bytes(&self) -> &[u8] {
        match self {
            Op::Embed { p, .. } => bytemuck::bytes_of(p),
            Op::RmsNorm { p, .. } | Op::AddRmsNorm { p, .. } => bytemuck::bytes_of(p),
            Op::MatMul { p, .. } => bytemuck::bytes_of(p),
            Op::RopeKvWrite { p, .. } => bytemuck::bytes_of(p),
            Op::Attention { p, .. } => bytemuck::bytes_of(p),
            Op::RopeAttention { p, .. } => bytemuck::bytes_of(p),
            Op::SwiGlu { p, .. } => bytemuck::bytes_of(p),
            Op::Add { p, .. } => bytemuck::bytes_of(p),
            Op::Argmax { p, .. } => bytemuck::bytes_of(p),
            Op::TopK { p, .. } => bytemuck::bytes_of(p),
        }
    }

    /// Buffers in WGSL binding order (binding 0 is always the params uniform on the GPU, so these
    /// start at binding 1). The last entries are the ones the kernel writes.
    pub fn bindings(&self) -> Vec<BufferId> {
        match self {
            Op::Embed { table, ids, out, .. } => vec![table.buf, *ids, *out],
            Op::RmsNorm { x, weight, out, .. } => vec![*x, *weight, *out],
            Op::AddRmsNorm { residual, residual_out, x, weight, out, .. } => vec![*x, *weight, *residual, *residual_out, *out],
            Op::MatMul { w, x, bias, out, .. } => match bias {
                Some(b) => vec![w.buf, *x, *b, *out],
                None => vec![w.buf, *x, *out],
            },
            // Absent norm weights are bound to placeholders (`shaders::slots`).
            Op::RopeKvWrite { qkv, table, q_norm, k_norm, q_out, k_cache, v_cache, .. } => {
                let mut v = vec![*table, *qkv];
                v.extend(q_norm.iter().chain(k_norm.iter()));
                v.extend([*q_out, *k_cache, *v_cache]);
                v
            }
            Op::Attention { q, k_cache, v_cache, out, .. } => vec![*q, *k_cache, *v_cache, *out],
            Op::RopeAttention { qkv, table, q_norm, k_norm, k_cache, v_cache, out, .. } => {
                let mut v = vec![*table, *qkv];
                v.extend(q_norm.iter().chain(k_norm.iter()));
                v.extend([*k_cache, *v_cache, *out]);
                v
            }
            Op::SwiGlu { gate_up, out, .. } => vec![*gate_up, *out],
            Op::Add { a, b, .. } => vec![*b, *a],
            Op::Argmax { x, out, .. } | Op::TopK { x, out, .. } => vec![*x, *out],
        }
    }

    /// Smallest size in bytes each buffer of this op must have, as `(buffer, role, bytes)`, for
    /// devices that check before running (GPUs clamp out-of-range accesses instead of failing).
    /// Shapes no kernel can run (a weight not in whole blocks, output columns past the stride)
    /// are errors.
    pub fn required_bytes(&self) -> Result<Vec<(BufferId, &'static str, u64)>, String> {
        let f = |elems: u64| elems * 4;
        let weight = |w: &WeightBuf, rows: u32, cols: u32| -> Result<u64, String> {
            if (w.rows, w.cols) != (rows, cols) {
                return Err(format!("weight is {}x{}, params say {rows}x{cols}", w.rows, w.cols));
            }
            let block = w.format.block_elems() as u64;
            if w.format.fields().is_empty() || !(cols as u64).is_multiple_of(block) {
                return Err(format!("{} weight with {cols} columns", w.format.name()));
            }
            let blocks = rows as u64 * (cols as u64 / block);
            let blocks = usize::try_from(blocks).map_err(|_| "weight too large".to_string())?;
            Ok(crate::quant::packed_len(w.format, blocks) as u64)
        };
        Ok(match self {
            Op::Embed { table, ids, out, p } => vec![
                (table.buf, "table", weight(table, p.n_rows, p.hidden)?),
                (*ids, "ids", f(p.n_tokens as u64)),
                (*out, "out", f(p.n_tokens as u64 * p.hidden as u64)),
            ],
            Op::RmsNorm { x, weight, out, p } => {
                let n = f(p.n_rows as u64 * p.n_cols as u64);
                vec![(*x, "x", n), (*weight, "weight", f(p.n_cols as u64)), (*out, "out", n)]
            }
            Op::AddRmsNorm { residual, residual_out, x, weight, out, p } => {
                if residual == residual_out {
                    return Err("residual_out must be a buffer apart from residual".into());
                }
                let n = f(p.n_rows as u64 * p.n_cols as u64);
                vec![
                    (*x, "x", n),
                    (*weight, "weight", f(p.n_cols as u64)),
                    (*residual, "residual", n),
                    (*residual_out, "residual_out", n),
                    (*out, "out", n),
                ]
            }
            Op::MatMul { w, x, bias, out, p } => {
                if p.out_col as u64 + p.n as u64 > p.out_stride as u64 {
                    return Err(format!("columns {}+{} overflow the output stride {}", p.out_col, p.n, p.out_stride));
                }
                let mut v = vec![
                    (w.buf, "weight", weight(w, p.n, p.k)?),
                    (*x, "x", f((p.x_row as u64 + p.m as u64) * p.k as u64)),
                ];
                if let Some(b) = bias {
                    v.push((*b, "bias", f(p.n as u64)));
                }
                if p.m > 0 {
                    v.push((*out, "out", f((p.m as u64 - 1) * p.out_stride as u64 + p.out_col as u64 + p.n as u64)));
                }
                v
            }
            Op::RopeKvWrite { qkv, table, q_norm, k_norm, q_out, k_cache, v_cache, p, .. } => {
                if p.head_dim % 2 != 0 || p.n_kv_heads == 0 {
                    return Err(format!("head_dim {} / n_kv_heads {}", p.head_dim, p.n_kv_heads));
                }
                if (q_norm.is_some() || k_norm.is_some()) != (p.qk_norm != 0) || q_norm.is_some() != k_norm.is_some() {
                    return Err("q_norm and k_norm must both be given exactly when qk_norm is set".into());
                }
                let (n, d) = (p.n_tokens as u64, p.head_dim as u64);
                let cache = f((p.pos_offset as u64 + n) * p.n_kv_heads as u64 * d);
                let mut v = vec![
                    (*table, "table", f((p.pos_offset as u64 + n) * d)),
                    (*qkv, "qkv", f(n * p.qkv_width())),
                ];
                for (b, role) in [(q_norm, "q_norm"), (k_norm, "k_norm")] {
                    if let Some(b) = b {
                        v.push((*b, role, f(d)));
                    }
                }
                v.extend([(*q_out, "q_out", f(n * p.n_heads as u64 * d)), (*k_cache, "k_cache", cache), (*v_cache, "v_cache", cache)]);
                v
            }
            Op::Attention { q, k_cache, v_cache, out, p } => {
                let n = f(p.n_tokens as u64 * p.n_heads as u64 * p.head_dim as u64);
                let cache = f((p.pos_offset as u64 + p.n_tokens as u64) * p.n_kv_heads as u64 * p.head_dim as u64);
                vec![(*q, "q", n), (*k_cache, "k_cache", cache), (*v_cache, "v_cache", cache), (*out, "out", n)]
            }
            Op::RopeAttention { qkv, table, q_norm, k_norm, k_cache, v_cache, out, p } => {
                let rope = p.rope();
                if !RopeAttentionParams::fusable(&rope) {
                    return Err(format!("{} tokens with head_dim {}: one token, head_dim a multiple of 4 up to {DECODE_MAX_HEAD_DIM}", p.n_tokens, p.head_dim));
                }
                if p.n_kv_heads == 0 || p.n_heads % p.n_kv_heads != 0 {
                    return Err(format!("{} heads over {} kv heads", p.n_heads, p.n_kv_heads));
                }
                if p.kv_splits == 0 || p.kv_splits > MAX_KV_SPLITS {
                    return Err(format!("kv_splits {} is outside 1..={MAX_KV_SPLITS}", p.kv_splits));
                }
                if (q_norm.is_some() || k_norm.is_some()) != (p.qk_norm != 0) || q_norm.is_some() != k_norm.is_some() {
                    return Err("q_norm and k_norm must both be given exactly when qk_norm is set".into());
                }
                let d = p.head_dim as u64;
                let cache = f((p.pos_offset as u64 + 1) * p.n_kv_heads as u64 * d);
                let mut v = vec![(*table, "table", f((p.pos_offset as u64 + 1) * d)), (*qkv, "qkv", f(rope.qkv_width()))];
                for (b, role) in [(q_norm, "q_norm"), (k_norm, "k_norm")] {
                    if let Some(b) = b {
                        v.push((*b, role, f(d)));
                    }
                }
                v.extend([(*k_cache, "k_cache", cache), (*v_cache, "v_cache", cache), (*out, "out", f(p.n_heads as u64 * d))]);
                v
            }
            Op::SwiGlu { gate_up, out, p } => {
                let n = p.n_tokens as u64 * p.width as u64;
                vec![(*gate_up, "gate_up", f(2 * n)), (*out, "out", f(n))]
            }
            Op::Add { a, b, p } => vec![(*b, "b", f(p.n as u64)), (*a, "a", f(p.n as u64))],
            Op::Argmax { x, out, p } => vec![(*x, "x", f(p.offset as u64 + p.n as u64)), (*out, "out", 4)],
            Op::TopK { x, out, p } => {
                if p.k == 0 || p.k > TOP_K_MAX {
                    return Err(format!("top-k of {} places (1..={TOP_K_MAX})", p.k));
                }
                if p.n == 0 {
                    return Err("top-k of an empty row".into());
                }
                vec![(*x, "x", f(p.offset as u64 + p.n as u64)), (*out, "out", f(2 * p.k as u64))]
            }
        })
    }
}
