//! GGML tensor element types: on-disk block layouts (`#[repr(C)]` structs with size asserts),
//! reference dequantizers (bit-exact with gguf-py), and the device layout ("SoA segments").
//!
//! Device layout: a quantized tensor of `n_blocks` blocks is repacked at load into one 16-byte-aligned
//! buffer made of one *segment* per block field (`BlockField`), each segment the concatenation of that
//! field over all blocks, padded to 16 bytes. So a Q4_0 tensor becomes `[d: f16 × n_blocks][qs: 16 B × n_blocks]`.
//! GPU kernels read fields with aligned u32 / vec4<u32> loads; the reference kernels gather a block back with
//! `gather_block` and reuse the on-disk dequantizer, so the two paths cannot drift silently.
//!
//! Bit-exactness: every dequantizer performs the same f32 operations, in the same order, as
//! gguf-py's numpy code (e.g. Q4_K computes `d·sc` and `dmin·m` as f32 products first, then
//! `(d·sc)·q − dmin·m`). Rust never fuses `a * b + c` into an FMA on its own, so the results agree
//! to the bit.

use core::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::error::{EngineError, Result};

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Elements per "legacy" quant block (Q4_0 … Q8_0).
pub const QK: usize = 32;

/// GGML type ids as stored in GGUF tensor infos.
///
/// Every type that ggml (gguf-py 0.19) knows parses, so `inspect` can list any file; only the
/// types with a dequantizer here are *supported* (`is_supported`); using another one fails with
/// `EngineError::UnsupportedTensorType`.
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
    // Known to ggml, not supported by this engine.
    Q8_1,
    Q2_K,
    Q3_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// Static facts about one type: GGUF id, name, elements per block, bytes per block.
struct TypeInfo {
    id: u32,
    name: &'static str,
    block_elems: usize,
    block_bytes: usize,
}

const fn info(id: u32, name: &'static str, block_elems: usize, block_bytes: usize) -> TypeInfo {
    TypeInfo { id, name, block_elems, block_bytes }
}

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 34] = {
        use GgmlType::*;
        [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS,
            IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64, IQ1_M, BF16,
            TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0,
        ]
    };

    const fn info(self) -> TypeInfo {
        use GgmlType::*;
        match self {
            F32 => info(0, "F32", 1, 4),
            F16 => info(1, "F16", 1, 2),
            Q4_0 => info(2, "Q4_0", QK, size_of::<BlockQ4_0>()),
            Q4_1 => info(3, "Q4_1", QK, size_of::<BlockQ4_1>()),
            Q5_0 => info(6, "Q5_0", QK, size_of::<BlockQ5_0>()),
            Q5_1 => info(7, "Q5_1", QK, size_of::<BlockQ5_1>()),
            Q8_0 => info(8, "Q8_0", QK, size_of::<BlockQ8_0>()),
            Q8_1 => info(9, "Q8_1", QK, 4 + 4 + 32),
            Q2_K => info(10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => info(11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => info(12, "Q4_K", QK_K, size_of::<BlockQ4K>()),
            Q5_K => info(13, "Q5_K", QK_K, size_of::<BlockQ5K>()),
            Q6_K => info(14, "Q6_K", QK_K, size_of::<BlockQ6K>()),
            Q8_K => info(15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => info(16, "IQ2_XXS", QK_K, 2 + QK_K / 4),
            IQ2_XS => info(17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => info(18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => info(19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => info(20, "IQ4_NL", QK, 2 + 16),
            IQ3_S => info(21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => info(22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => info(23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => info(24, "I8", 1, 1),
            I16 => info(25, "I16", 1, 2),
            I32 => info(26, "I32", 1, 4),
            I64 => info(27, "I64", 1, 8),
            F64 => info(28, "F64", 1, 8),
            IQ1_M => info(29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            BF16 => info(30, "BF16", 1, 2),
            TQ1_0 => info(34, "TQ1_0", QK_K, 2 + 4 * 13),
            TQ2_0 => info(35, "TQ2_0", QK_K, 2 + 64),
            MXFP4 => info(39, "MXFP4", QK, 1 + 16),
            NVFP4 => info(40, "NVFP4", 64, 4 + 32),
            Q1_0 => info(41, "Q1_0", 128, 2 + 16),
        }
    }

    /// The type for a GGUF tensor-info type id. Ids that ggml has retired or never had are
    /// `UnknownTensorType`; known but unsupported ids parse (see `is_supported`).
    pub fn from_id(id: u32) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|ty| ty.id() == id)
            .ok_or(EngineError::UnknownTensorType(id))
    }

    pub const fn id(self) -> u32 {
        self.info().id
    }

    /// The ggml / gguf-py name, e.g. `"Q4_K"`.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Elements per block: 1 for plain element types, 32 for Q4_0…Q8_0, 256 for K-quants.
    pub const fn block_elems(self) -> usize {
        self.info().block_elems
    }

    /// Bytes per block on disk.
    pub const fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Whether this engine can dequantize (and therefore use) the type.
    pub const fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K | Q6_K)
    }

    /// `Ok(())` for supported types, `UnsupportedTensorType` for the rest.
    pub fn ensure_supported(self) -> Result<()> {
        if self.is_supported() {
            Ok(())
        } else {
            Err(EngineError::UnsupportedTensorType(self.name().to_string()))
        }
    }

    /// Bytes taken by `n_elems` consecutive elements (a row), which must be whole blocks.
    pub fn row_bytes(self, n_elems: usize) -> Result<usize> {
        let block_elems = self.block_elems();
        if !n_elems.is_multiple_of(block_elems) {
            return Err(EngineError::corrupt(
                "tensor row",
                format!("{n_elems} elements is not a multiple of the {} block size {block_elems}", self.name()),
            ));
        }
        (n_elems / block_elems).checked_mul(self.block_bytes()).ok_or_else(|| {
            EngineError::corrupt("tensor row", format!("{n_elems} {} elements overflow usize", self.name()))
        })
    }

    /// The on-disk fields of one block, in disk order, as laid out into device segments.
    /// Scale pairs that are always read together (Q4_1/Q5_1 `d`+`m`, K-quant `d`+`dmin`) form one
    /// 4-byte field `"dm"`, so a kernel fetches both with one u32 load; Q4_K keeps its scales with
    /// them (`"dm_scales"`, 16 bytes: one vec4 load). The f16 scales are always the first bytes of
    /// the fields named `"d"` or starting with `"dm"`. Empty for unsupported types.
    pub fn fields(self) -> &'static [BlockField] {
        use GgmlType::*;
        match self {
            F32 => &FIELDS_F32,
            F16 | BF16 => &FIELDS_HALF,
            Q4_0 => &FIELDS_Q4_0,
            Q4_1 => &FIELDS_Q4_1,
            Q5_0 => &FIELDS_Q5_0,
            Q5_1 => &FIELDS_Q5_1,
            Q8_0 => &FIELDS_Q8_0,
            Q4_K => &FIELDS_Q4_K,
            Q5_K => &FIELDS_Q5_K,
            Q6_K => &FIELDS_Q6_K,
            _ => &[],
        }
    }
}

impl core::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One field of a block, as laid out on disk: `offset` and `len` in bytes within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockField {
    pub name: &'static str,
    pub offset: usize,
    pub len: usize,
}

// ---------------------------------------------------------------------------------------------
// On-disk blocks. Field order and sizes follow the GGUF/ggml format definitions; `f16` has
// alignment 2 and no field needs more, so `repr(C)` adds no padding (checked by the asserts).

/// 32 weights: `x = d · (q − 8)`, q a 4-bit nibble (low nibbles are elements 0‥15, high 16‥31).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// 32 weights: `x = d · q + m`, q an unsigned 4-bit nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// 32 weights: `x = d · (q − 16)`, q = nibble | (bit i of the little-endian u32 `qh`) << 4.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// 32 weights: `x = d · q + m`, q an unsigned 5-bit value built as for Q5_0.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// 32 weights: `x = q · d`, q a signed byte.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// 256 weights in 8 sub-blocks of 32: `x = (d·sc) · q − (dmin·m)` with 6-bit `sc`/`m` per
/// sub-block packed into `scales`, q a 4-bit nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ4K>() == 144);

/// Q4_K plus one high bit per weight: bit j of `qh[l]` belongs to element l of sub-block j.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(size_of::<BlockQ5K>() == 176);

/// 256 weights in 16 sub-blocks of 16: `x = (d·scale) · (q − 32)`, q 6 bits (4 in `ql`, 2 in `qh`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(size_of::<BlockQ6K>() == 210);

// Field tables, derived from the structs so they cannot disagree with them.
macro_rules! field {
    ($name:literal, $block:ty, $field:ident, $len:expr) => {
        BlockField { name: $name, offset: offset_of!($block, $field), len: $len }
    };
}
const FIELDS_F32: [BlockField; 1] = [BlockField { name: "value", offset: 0, len: 4 }];
const FIELDS_HALF: [BlockField; 1] = [BlockField { name: "value", offset: 0, len: 2 }];
const FIELDS_Q4_0: [BlockField; 2] = [field!("d", BlockQ4_0, d, 2), field!("qs", BlockQ4_0, qs, 16)];
const FIELDS_Q4_1: [BlockField; 2] = [field!("dm", BlockQ4_1, d, 4), field!("qs", BlockQ4_1, qs, 16)];
const FIELDS_Q5_0: [BlockField; 3] =
    [field!("d", BlockQ5_0, d, 2), field!("qh", BlockQ5_0, qh, 4), field!("qs", BlockQ5_0, qs, 16)];
const FIELDS_Q5_1: [BlockField; 3] =
    [field!("dm", BlockQ5_1, d, 4), field!("qh", BlockQ5_1, qh, 4), field!("qs", BlockQ5_1, qs, 16)];
const FIELDS_Q8_0: [BlockField; 2] = [field!("d", BlockQ8_0, d, 2), field!("qs", BlockQ8_0, qs, 32)];
// d, dmin and the 12 scale bytes stay together: one 16-byte record per block, so a matvec thread
// gets all of a block's metadata with a single vec4 load (four loads before).
const FIELDS_Q4_K: [BlockField; 2] = [field!("dm_scales", BlockQ4K, d, 16), field!("qs", BlockQ4K, qs, 128)];
const FIELDS_Q5_K: [BlockField; 4] = [
    field!("dm", BlockQ5K, d, 4),
    field!("scales", BlockQ5K, scales, 12),
    field!("qh", BlockQ5K, qh, 32),
    field!("qs", BlockQ5K, qs, 128),
];
const FIELDS_Q6_K: [BlockField; 4] = [
    field!("ql", BlockQ6K, ql, 128),
    field!("qh", BlockQ6K, qh, 64),
    field!("scales", BlockQ6K, scales, 16),
    field!("d", BlockQ6K, d, 2),
];

/// The fields of each supported type tile its block exactly, in order, without gaps.
const fn fields_tile_block(fields: &[BlockField], block_bytes: usize) -> bool {
    let mut next = 0;
    let mut i = 0;
    while i < fields.len() {
        if fields[i].offset != next {
            return false;
        }
        next += fields[i].len;
        i += 1;
    }
    next == block_bytes
}
const _: () = {
    assert!(fields_tile_block(&FIELDS_F32, 4));
    assert!(fields_tile_block(&FIELDS_HALF, 2));
    assert!(fields_tile_block(&FIELDS_Q4_0, 18));
    assert!(fields_tile_block(&FIELDS_Q4_1, 20));
    assert!(fields_tile_block(&FIELDS_Q5_0, 22));
    assert!(fields_tile_block(&FIELDS_Q5_1, 24));
    assert!(fields_tile_block(&FIELDS_Q8_0, 34));
    assert!(fields_tile_block(&FIELDS_Q4_K, 144));
    assert!(fields_tile_block(&FIELDS_Q5_K, 176));
    assert!(fields_tile_block(&FIELDS_Q6_K, 210));
};

// ---------------------------------------------------------------------------------------------
// Reference dequantizers.

/// Dequantizes `out.len()` elements (whole blocks) from their on-disk bytes `data`, which must be
/// exactly `ty.row_bytes(out.len())` long.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    ty.ensure_supported()?;
    let expected = ty.row_bytes(out.len())?;
    if data.len() != expected {
        return Err(EngineError::corrupt(
            "tensor data",
            format!("{} bytes for {} {} elements, expected {expected}", data.len(), out.len(), ty.name()),
        ));
    }
    match ty {
        GgmlType::F32 => {
            for (x, bytes) in out.iter_mut().zip(data.chunks_exact(4)) {
                *x = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
        }
        GgmlType::F16 => {
            for (x, bytes) in out.iter_mut().zip(data.chunks_exact(2)) {
                *x = f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            // bf16 is the top half of an f32: widening is exact, including NaN payloads.
            for (x, bytes) in out.iter_mut().zip(data.chunks_exact(2)) {
                *x = bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => for_each_block(data, out, dequantize_q4_0)?,
        GgmlType::Q4_1 => for_each_block(data, out, dequantize_q4_1)?,
        GgmlType::Q5_0 => for_each_block(data, out, dequantize_q5_0)?,
        GgmlType::Q5_1 => for_each_block(data, out, dequantize_q5_1)?,
        GgmlType::Q8_0 => for_each_block(data, out, dequantize_q8_0)?,
        GgmlType::Q4_K => for_each_block(data, out, dequantize_q4_k)?,
        GgmlType::Q5_K => for_each_block(data, out, dequantize_q5_k)?,
        GgmlType::Q6_K => for_each_block(data, out, dequantize_q6_k)?,
        _ => return Err(EngineError::UnsupportedTensorType(ty.name().to_string())),
    }
    Ok(())
}

/// Runs `dequantize_block` over matching (block bytes, N outputs) pairs; lengths are pre-checked.
fn for_each_block<B: Pod, const N: usize>(
    data: &[u8],
    out: &mut [f32],
    dequantize_block: fn(&B, &mut [f32; N]),
) -> Result<()> {
    for (bytes, chunk) in data.chunks_exact(size_of::<B>()).zip(out.chunks_exact_mut(N)) {
        // Reading unaligned: file data carries no alignment guarantee for the f16 fields.
        let block: B = bytemuck::try_pod_read_unaligned(bytes)
            .map_err(|e| EngineError::corrupt("quantized block", e.to_string()))?;
        let chunk: &mut [f32; N] =
            chunk.try_into().map_err(|_| EngineError::corrupt("quantized block", "output chunk size"))?;
        dequantize_block(&block, chunk);
    }
    Ok(())
}

fn dequantize_q4_0(block: &BlockQ4_0, out: &mut [f32; QK]) {
    let d = block.d.to_f32();
    let (low, high) = out.split_at_mut(QK / 2);
    for ((&q, lo), hi) in block.qs.iter().zip(low).zip(high) {
        *lo = d * ((q & 0x0F) as i32 - 8) as f32;
        *hi = d * ((q >> 4) as i32 - 8) as f32;
    }
}

fn dequantize_q4_1(block: &BlockQ4_1, out: &mut [f32; QK]) {
    let d = block.d.to_f32();
    let m = block.m.to_f32();
    let (low, high) = out.split_at_mut(QK / 2);
    for ((&q, lo), hi) in block.qs.iter().zip(low).zip(high) {
        *lo = d * (q & 0x0F) as f32 + m;
        *hi = d * (q >> 4) as f32 + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: low nibbles from `qs`, bit i of `qh` as bit 4 of element i.
fn q5_values(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let high_bits = u32::from_le_bytes(qh);
    let mut q = [0u8; QK];
    for (i, &byte) in qs.iter().enumerate() {
        q[i] = (byte & 0x0F) | ((((high_bits >> i) & 1) as u8) << 4);
        q[i + QK / 2] = (byte >> 4) | ((((high_bits >> (i + QK / 2)) & 1) as u8) << 4);
    }
    q
}

fn dequantize_q5_0(block: &BlockQ5_0, out: &mut [f32; QK]) {
    let d = block.d.to_f32();
    for (x, &q) in out.iter_mut().zip(q5_values(block.qh, &block.qs).iter()) {
        *x = d * (q as i32 - 16) as f32;
    }
}

fn dequantize_q5_1(block: &BlockQ5_1, out: &mut [f32; QK]) {
    let d = block.d.to_f32();
    let m = block.m.to_f32();
    for (x, &q) in out.iter_mut().zip(q5_values(block.qh, &block.qs).iter()) {
        *x = d * q as f32 + m;
    }
}

fn dequantize_q8_0(block: &BlockQ8_0, out: &mut [f32; QK]) {
    let d = block.d.to_f32();
    for (x, &q) in out.iter_mut().zip(block.qs.iter()) {
        *x = q as f32 * d;
    }
}

/// Unpacks the 6-bit (scale, min) pair of K-quant sub-block `j` (0‥8) from the 12 packed bytes:
/// bytes 0‥3 hold scales 0‥3 (low 6 bits) and the top 2 bits of scales 4‥7; bytes 4‥7 the same for
/// mins; bytes 8‥11 the low nibbles of scales 4‥7 (low half) and mins 4‥7 (high half).
fn k_scale_min(scales: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 0x3F, scales[j + 4] & 0x3F)
    } else {
        let scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        let min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (scale, min)
    }
}

fn dequantize_q4_k(block: &BlockQ4K, out: &mut [f32; QK_K]) {
    let d = block.d.to_f32();
    let dmin = block.dmin.to_f32();
    // Sub-blocks 2c and 2c+1 share the 32 bytes of chunk c: low nibbles, then high nibbles.
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (scale, min) = k_scale_min(&block.scales, j);
        let d_scale = d * scale as f32;
        let d_min = dmin * min as f32;
        let shift = 4 * (j % 2);
        let bytes = &block.qs[32 * (j / 2)..32 * (j / 2) + 32];
        for (x, &byte) in sub.iter_mut().zip(bytes) {
            let q = (byte >> shift) & 0x0F;
            *x = d_scale * q as f32 - d_min;
        }
    }
}

fn dequantize_q5_k(block: &BlockQ5K, out: &mut [f32; QK_K]) {
    let d = block.d.to_f32();
    let dmin = block.dmin.to_f32();
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let (scale, min) = k_scale_min(&block.scales, j);
        let d_scale = d * scale as f32;
        let d_min = dmin * min as f32;
        let shift = 4 * (j % 2);
        let bytes = &block.qs[32 * (j / 2)..32 * (j / 2) + 32];
        for ((x, &byte), &high) in sub.iter_mut().zip(bytes).zip(block.qh.iter()) {
            let q = ((byte >> shift) & 0x0F) | (((high >> j) & 1) << 4);
            *x = d_scale * q as f32 - d_min;
        }
    }
}

fn dequantize_q6_k(block: &BlockQ6K, out: &mut [f32; QK_K]) {
    let d = block.d.to_f32();
    // Each half of 128 elements uses 64 `ql` bytes (low nibbles: elements 0‥63, high: 64‥127) and
    // 32 `qh` bytes (2-bit fields at shifts 0, 2, 4, 6 for elements 0‥31, 32‥63, 64‥95, 96‥127).
    for (i, x) in out.iter_mut().enumerate() {
        let (half, r) = (i / 128, i % 128);
        let low = (block.ql[64 * half + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (block.qh[32 * half + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i32 - 32;
        let d_scale = d * block.scales[i / 16] as f32;
        *x = d_scale * q as f32;
    }
}

// ---------------------------------------------------------------------------------------------
// Device layout: SoA segments.

/// Segment alignment: 16 bytes, so every segment starts on a `vec4<u32>` boundary and kernels can
/// read whole 16-byte words of any field.
pub const SEGMENT_ALIGN: usize = 16;

const fn pad_segment(n: usize) -> usize {
    n.saturating_add(SEGMENT_ALIGN - 1) & !(SEGMENT_ALIGN - 1)
}

/// Byte offset of each field segment (in `ty.fields()` order) in the packed buffer of `n_blocks`
/// blocks. Each segment is `field.len × n_blocks` bytes padded to a multiple of `SEGMENT_ALIGN`.
pub fn segment_offsets(ty: GgmlType, n_blocks: usize) -> Vec<usize> {
    let mut offset = 0usize;
    ty.fields()
        .iter()
        .map(|field| {
            let start = offset;
            offset = offset.saturating_add(pad_segment(field.len.saturating_mul(n_blocks)));
            start
        })
        .collect()
}

/// Total bytes of the packed buffer for `n_blocks` blocks (a multiple of 16; 0 for unsupported types).
pub fn packed_len(ty: GgmlType, n_blocks: usize) -> usize {
    ty.fields()
        .iter()
        .fold(0usize, |total, field| total.saturating_add(pad_segment(field.len.saturating_mul(n_blocks))))
}

/// Disk layout → packed SoA layout. `data` must be whole blocks.
pub fn repack(ty: GgmlType, data: &[u8]) -> Result<Vec<u8>> {
    ty.ensure_supported()?;
    let block_bytes = ty.block_bytes();
    if !data.len().is_multiple_of(block_bytes) {
        return Err(EngineError::corrupt(
            "tensor data",
            format!("{} bytes is not a whole number of {}-byte {} blocks", data.len(), block_bytes, ty.name()),
        ));
    }
    let n_blocks = data.len() / block_bytes;
    let mut packed = vec![0u8; packed_len(ty, n_blocks)];
    let mut rest = packed.as_mut_slice();
    for field in ty.fields() {
        let segment_len = pad_segment(field.len * n_blocks);
        let (segment, tail) = rest.split_at_mut(segment_len);
        rest = tail;
        for (dst, block) in segment.chunks_exact_mut(field.len).zip(data.chunks_exact(block_bytes)) {
            dst.copy_from_slice(&block[field.offset..field.offset + field.len]);
        }
    }
    Ok(packed)
}

/// Packed SoA layout → the on-disk bytes of block `block_index` of a tensor of `n_blocks` blocks,
/// written to `out[..ty.block_bytes()]`.
///
/// # Panics
/// If `block_index >= n_blocks`, `packed` is shorter than `packed_len(ty, n_blocks)` or `out` is
/// shorter than a block: the packed buffer is made by `repack`, so these are caller bugs, not bad
/// input. `dequantize_packed` checks them and returns an error instead.
pub fn gather_block(ty: GgmlType, packed: &[u8], n_blocks: usize, block_index: usize, out: &mut [u8]) {
    assert!(block_index < n_blocks, "block {block_index} out of {n_blocks}");
    let mut segment_start = 0;
    for field in ty.fields() {
        let src = segment_start + block_index * field.len;
        out[field.offset..field.offset + field.len].copy_from_slice(&packed[src..src + field.len]);
        segment_start += pad_segment(field.len * n_blocks);
    }
}

/// Dequantizes `out.len()` elements — a whole number of blocks starting at block `first_block` —
/// straight from the packed layout of a tensor of `n_blocks` blocks.
pub fn dequantize_packed(
    ty: GgmlType,
    packed: &[u8],
    n_blocks: usize,
    first_block: usize,
    out: &mut [f32],
) -> Result<()> {
    ty.ensure_supported()?;
    let block_elems = ty.block_elems();
    let block_bytes = ty.block_bytes();
    let bad = |detail: String| EngineError::corrupt("packed tensor", detail);
    if !out.len().is_multiple_of(block_elems) {
        return Err(bad(format!("{} elements is not whole {} blocks", out.len(), ty.name())));
    }
    let n_out_blocks = out.len() / block_elems;
    let end_block = first_block.checked_add(n_out_blocks).filter(|&end| end <= n_blocks);
    let Some(end_block) = end_block else {
        return Err(bad(format!("blocks {first_block}+{n_out_blocks} out of {n_blocks}")));
    };
    if packed.len() < packed_len(ty, n_blocks) || n_blocks.checked_mul(block_bytes).is_none() {
        return Err(bad(format!("{} bytes for {n_blocks} {} blocks", packed.len(), ty.name())));
    }

    // A single-field type's only segment *is* its disk layout.
    if let [_] = ty.fields() {
        return dequantize(ty, &packed[first_block * block_bytes..end_block * block_bytes], out);
    }

    const CHUNK_BLOCKS: usize = 64;
    let mut scratch = vec![0u8; CHUNK_BLOCKS * block_bytes];
    for (chunk_index, out_chunk) in out.chunks_mut(CHUNK_BLOCKS * block_elems).enumerate() {
        let chunk_first = first_block + chunk_index * CHUNK_BLOCKS;
        let chunk_blocks = out_chunk.len() / block_elems;
        let disk = &mut scratch[..chunk_blocks * block_bytes];
        for (i, block) in disk.chunks_exact_mut(block_bytes).enumerate() {
            gather_block(ty, packed, n_blocks, chunk_first + i, block);
        }
        dequantize(ty, disk, out_chunk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic test bytes without a dependency.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    fn supported() -> impl Iterator<Item = GgmlType> {
        GgmlType::ALL.into_iter().filter(|ty| ty.is_supported())
    }

    #[test]
    fn ids_round_trip_and_unknown_ids_fail() {
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty.id()).ok(), Some(ty));
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
            assert!(matches!(GgmlType::from_id(id), Err(EngineError::UnknownTensorType(i)) if i == id));
        }
    }

    #[test]
    fn block_sizes_match_ggml() {
        use GgmlType::*;
        let expected = [
            (F32, 1, 4),
            (F16, 1, 2),
            (BF16, 1, 2),
            (Q4_0, 32, 18),
            (Q4_1, 32, 20),
            (Q5_0, 32, 22),
            (Q5_1, 32, 24),
            (Q8_0, 32, 34),
            (Q4_K, 256, 144),
            (Q5_K, 256, 176),
            (Q6_K, 256, 210),
            (Q2_K, 256, 84),
            (Q3_K, 256, 110),
            (Q8_K, 256, 292),
        ];
        for (ty, elems, bytes) in expected {
            assert_eq!((ty.block_elems(), ty.block_bytes()), (elems, bytes), "{ty}");
        }
        assert_eq!(Q4_K.row_bytes(4864).ok(), Some(19 * 144));
        assert!(Q4_K.row_bytes(896).is_err());
        assert!(!F16.is_quantized() && Q8_0.is_quantized());
    }

    #[test]
    fn unsupported_types_fail_at_use() {
        let mut out = [0f32; 256];
        let data = vec![0u8; GgmlType::Q2_K.block_bytes()];
        assert!(matches!(
            dequantize(GgmlType::Q2_K, &data, &mut out),
            Err(EngineError::UnsupportedTensorType(name)) if name == "Q2_K"
        ));
        assert!(matches!(repack(GgmlType::IQ4_NL, &[0; 18]), Err(EngineError::UnsupportedTensorType(_))));
    }

    #[test]
    fn dequantize_rejects_wrong_lengths() {
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_0, &[0; 17], &mut out).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 19], &mut out).is_err());
        assert!(dequantize(GgmlType::Q4_K, &[0; 144], &mut out).is_err());
    }

    #[test]
    fn segments_are_padded_and_ordered() {
        for ty in supported() {
            for n_blocks in [1, 2, 3, 7, 64] {
                let offsets = segment_offsets(ty, n_blocks);
                assert_eq!(offsets.len(), ty.fields().len());
                assert_eq!(offsets[0], 0);
                for (i, field) in ty.fields().iter().enumerate() {
                    assert_eq!(offsets[i] % SEGMENT_ALIGN, 0);
                    let end = offsets.get(i + 1).copied().unwrap_or(packed_len(ty, n_blocks));
                    assert_eq!(end - offsets[i], pad_segment(field.len * n_blocks), "{ty} {}", field.name);
                }
            }
        }
        // The module doc's example.
        assert_eq!(segment_offsets(GgmlType::Q4_0, 3), vec![0, 16]);
        assert_eq!(packed_len(GgmlType::Q4_0, 3), 16 + 48);
    }

    #[test]
    fn repack_then_gather_round_trips() {
        for ty in supported() {
            let n_blocks = 13;
            let data = random_bytes(ty.id() as u64 + 7, n_blocks * ty.block_bytes());
            let packed = repack(ty, &data).expect("repack");
            assert_eq!(packed.len(), packed_len(ty, n_blocks));
            let mut block = vec![0u8; ty.block_bytes()];
            for (b, expected) in data.chunks_exact(ty.block_bytes()).enumerate() {
                gather_block(ty, &packed, n_blocks, b, &mut block);
                assert_eq!(block, expected, "{ty} block {b}");
            }
            // Field segments hold exactly the fields, in block order.
            let offsets = segment_offsets(ty, n_blocks);
            for (field, &start) in ty.fields().iter().zip(&offsets) {
                for (b, disk) in data.chunks_exact(ty.block_bytes()).enumerate() {
                    let packed_field = &packed[start + b * field.len..start + (b + 1) * field.len];
                    assert_eq!(packed_field, &disk[field.offset..field.offset + field.len]);
                }
            }
        }
    }

    #[test]
    fn packed_dequantize_equals_disk_dequantize() {
        for ty in supported() {
            let n_blocks = 150; // more than one gather chunk
            let mut data = random_bytes(ty.id() as u64 + 99, n_blocks * ty.block_bytes());
            // Keep f16 scales finite so the comparison below is about values, not NaN payloads.
            if ty.is_quantized() {
                for block in data.chunks_exact_mut(ty.block_bytes()) {
                    for field in ty.fields().iter().filter(|f| f.name == "d" || f.name.starts_with("dm")) {
                        for half in block[field.offset..field.offset + field.len.min(4)].chunks_exact_mut(2) {
                            half[1] &= 0x3B; // exponent < 0x1F
                        }
                    }
                }
            }
            let n_elems = n_blocks * ty.block_elems();
            let mut from_disk = vec![0f32; n_elems];
            dequantize(ty, &data, &mut from_disk).expect("disk dequantize");
            let packed = repack(ty, &data).expect("repack");
            for (first, count) in [(0, n_blocks), (0, 1), (5, 70), (n_blocks - 1, 1), (64, 86)] {
                let mut from_packed = vec![0f32; count * ty.block_elems()];
                dequantize_packed(ty, &packed, n_blocks, first, &mut from_packed).expect("packed");
                let expected = &from_disk[first * ty.block_elems()..(first + count) * ty.block_elems()];
                let same = expected.iter().zip(&from_packed).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} blocks {first}+{count}");
            }
            let mut too_many = vec![0f32; 2 * ty.block_elems()];
            assert!(dequantize_packed(ty, &packed, n_blocks, n_blocks - 1, &mut too_many).is_err());
            assert!(dequantize_packed(ty, &packed[..packed.len() - 4], n_blocks, 0, &mut too_many).is_err());
        }
    }

    #[test]
    fn hand_made_blocks() {
        // Q4_0: d = 0.5, nibbles 0 and 15 → -4.0 and 3.5.
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2] = 0xF0;
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_0, &block, &mut out).expect("q4_0");
        assert_eq!((out[0], out[16], out[1]), (-4.0, 3.5, -4.0));

        // Q5_0: bit 31 of qh lifts element 31 (high nibble of qs[15]) by 16.
        let mut block = vec![0u8; 22];
        block[..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        block[2..6].copy_from_slice(&(1u32 << 31).to_le_bytes());
        block[6 + 15] = 0x30;
        dequantize(GgmlType::Q5_0, &block, &mut out).expect("q5_0");
        assert_eq!((out[31], out[15], out[0]), (3.0, -16.0, -16.0));

        // Q6_K: element 200 = half 1, r 72: ql[64+8] high nibble, qh[32+8] bits 4‥5, scale 12.
        let mut block = vec![0u8; 210];
        block[64 + 8] = 0x50;
        block[128 + 32 + 8] = 0b10_0000;
        block[192 + 12] = 3;
        block[208..210].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        let mut out = [0f32; 256];
        dequantize(GgmlType::Q6_K, &block, &mut out).expect("q6_k");
        assert_eq!(out[200], 0.75 * ((0x5 | (0b10 << 4)) - 32) as f32);
    }
}
