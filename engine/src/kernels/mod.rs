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
    /// `residual += x; out = rmsnorm(residual) * w` in one pass.
    AddRmsNorm,
    /// Decode: one activation row times a weight matrix.
    MatVec(WeightFormat),
    /// Prefill: several activation rows (tiled on the GPU).
    MatMul(WeightFormat),
    RopeNeox,
    RopeInterleaved,
    KvWrite,
    /// Causal attention over the KV cache (flash-decoding on GPU for one query row).
    Attention,
    SwiGlu,
    Add,
    Argmax,
}

// ---- Parameter structs: exactly the uniform block each WGSL kernel declares. ----

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct EmbedParams {
    pub n_tokens: u32,
    pub hidden: u32,
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
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RopeParams {
    pub n_tokens: u32,
    pub n_heads: u32,
    pub head_dim: u32,
    /// Position of the first token (row of the cos/sin table).
    pub pos_offset: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct KvWriteParams {
    pub n_tokens: u32,
    pub kv_dim: u32,
    pub pos_offset: u32,
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

/// One recorded kernel dispatch with its named buffers.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `out[t][:] = dequant(table[ids[t]][:])`.
    Embed { table: WeightBuf, ids: BufferId, out: BufferId, p: EmbedParams },
    /// `out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight`.
    RmsNorm { x: BufferId, weight: BufferId, out: BufferId, p: RmsNormParams },
    /// `residual += x; out = rmsnorm(residual) * weight`.
    AddRmsNorm { residual: BufferId, x: BufferId, weight: BufferId, out: BufferId, p: RmsNormParams },
    /// `out[m][n] = sum_k x[x_row + m][k] * w[n][k] (+ bias[n])`.
    MatMul { w: WeightBuf, x: BufferId, bias: Option<BufferId>, out: BufferId, p: MatMulParams },
    /// In-place rotation of `x: [n_tokens, n_heads, head_dim]` with `table: [ctx, head_dim/2, 2] (cos, sin)`.
    Rope { x: BufferId, table: BufferId, interleaved: bool, p: RopeParams },
    /// `k_cache[pos_offset + t] = k[t]`, same for v; caches are `[ctx, kv_dim]`.
    KvWrite { k: BufferId, v: BufferId, k_cache: BufferId, v_cache: BufferId, p: KvWriteParams },
    /// Causal GQA attention: `q: [n_tokens, n_heads, head_dim]` → `out` same shape.
    Attention { q: BufferId, k_cache: BufferId, v_cache: BufferId, out: BufferId, p: AttentionParams },
    /// `out = silu(gate) * up`.
    SwiGlu { gate: BufferId, up: BufferId, out: BufferId, p: ElementwiseParams },
    /// `a += b`.
    Add { a: BufferId, b: BufferId, p: ElementwiseParams },
    /// `out[0] = argmax(x[offset..offset+n])` (lowest index on ties), as u32.
    Argmax { x: BufferId, out: BufferId, p: ArgmaxParams },
}

impl Op {
    pub fn kernel_id(&self) -> KernelId {
        match self {
            Op::Embed { table, .. } => KernelId::Embed(table.format),
            Op::RmsNorm { .. } => KernelId::RmsNorm,
            Op::AddRmsNorm { .. } => KernelId::AddRmsNorm,
            Op::MatMul { w, p, .. } if p.m == 1 => KernelId::MatVec(w.format),
            Op::MatMul { w, .. } => KernelId::MatMul(w.format),
            Op::Rope { interleaved: false, .. } => KernelId::RopeNeox,
            Op::Rope { interleaved: true, .. } => KernelId::RopeInterleaved,
            Op::KvWrite { .. } => KernelId::KvWrite,
            Op::Attention { .. } => KernelId::Attention,
            Op::SwiGlu { .. } => KernelId::SwiGlu,
            Op::Add { .. } => KernelId::Add,
            Op::Argmax { .. } => KernelId::Argmax,
        }
    }

    /// The params struct as bytes, in the layout of the kernel's uniform block.
    pub fn params_bytes(&self) -> &[u8] {
        match self {
            Op::Embed { p, .. } => bytemuck::bytes_of(p),
            Op::RmsNorm { p, .. } | Op::AddRmsNorm { p, .. } => bytemuck::bytes_of(p),
            Op::MatMul { p, .. } => bytemuck::bytes_of(p),
            Op::Rope { p, .. } => bytemuck::bytes_of(p),
            Op::KvWrite { p, .. } => bytemuck::bytes_of(p),
            Op::Attention { p, .. } => bytemuck::bytes_of(p),
            Op::SwiGlu { p, .. } | Op::Add { p, .. } => bytemuck::bytes_of(p),
            Op::Argmax { p, .. } => bytemuck::bytes_of(p),
        }
    }

    /// Buffers in WGSL binding order (binding 0 is always the params uniform on the GPU, so these
    /// start at binding 1). The last entries are the ones the kernel writes.
    pub fn bindings(&self) -> Vec<BufferId> {
        match self {
            Op::Embed { table, ids, out, .. } => vec![table.buf, *ids, *out],
            Op::RmsNorm { x, weight, out, .. } => vec![*x, *weight, *out],
            Op::AddRmsNorm { residual, x, weight, out, .. } => vec![*x, *weight, *residual, *out],
            Op::MatMul { w, x, bias, out, .. } => match bias {
                Some(b) => vec![w.buf, *x, *b, *out],
                None => vec![w.buf, *x, *out],
            },
            Op::Rope { x, table, .. } => vec![*table, *x],
            Op::KvWrite { k, v, k_cache, v_cache, .. } => vec![*k, *v, *k_cache, *v_cache],
            Op::Attention { q, k_cache, v_cache, out, .. } => vec![*q, *k_cache, *v_cache, *out],
            Op::SwiGlu { gate, up, out, .. } => vec![*gate, *up, *out],
            Op::Add { a, b, .. } => vec![*b, *a],
            Op::Argmax { x, out, .. } => vec![*x, *out],
        }
    }
}
