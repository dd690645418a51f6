//! GGML tensor element types: on-disk block layouts (`#[repr(C)]` structs with size asserts),
//! reference dequantizers (bit-exact with gguf-py), and the device layout ("SoA segments").
//!
//! Device layout: a quantized tensor of `n_blocks` blocks is repacked at load into one u32-aligned
//! buffer made of one *segment* per block field (`BlockField`), each segment the concatenation of that
//! field over all blocks, padded to 4 bytes. So a Q4_0 tensor becomes `[d: f16 × n_blocks][qs: 16 B × n_blocks]`.
//! GPU kernels read fields with aligned u32 loads; the reference kernels gather a block back with
//! `gather_block` and reuse the on-disk dequantizer, so the two paths cannot drift silently.

use crate::error::{EngineError, Result};

/// GGML type ids as stored in GGUF tensor infos.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    BF16,
}

/// One field of a block, as laid out on disk: `offset` and `len` in bytes within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockField {
    pub name: &'static str,
    pub offset: usize,
    pub len: usize,
}
