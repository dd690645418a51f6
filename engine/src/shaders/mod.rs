//! The kernel registry: every `KernelId`'s WGSL file from `shaders/` (embedded with
//! `include_str!`, expanded by the one preprocessor in `preprocess.rs`), its entry points, its
//! binding layout and its dispatch geometry. Shared by every device that runs the WGSL (the wgpu
//! device now, the GPU simulator later), so file names, bindings and grids live in one place.

pub mod preprocess;

use crate::error::{EngineError, Result};
use crate::kernels::{KernelId, Op, WeightFormat};

pub use preprocess::Preprocessed;

/// Most workgroups in one dimension of a dispatch (the WebGPU default limit).
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65535;

macro_rules! shader {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../shaders/", $path)))
    };
}

/// Every file under `shaders/`, kernels and `common/` helpers, by path relative to `shaders/`.
pub static FILES: &[(&str, &str)] = &[
    shader!("add.wgsl"),
    shader!("add_rms_norm.wgsl"),
    shader!("argmax.wgsl"),
    shader!("attention.wgsl"),
    shader!("attention_decode.wgsl"),
    shader!("rope_attention_decode.wgsl"),
    shader!("embed_f16.wgsl"),
    shader!("embed_f32.wgsl"),
    shader!("embed_q4_0.wgsl"),
    shader!("embed_q4_1.wgsl"),
    shader!("embed_q4_k.wgsl"),
    shader!("embed_q5_0.wgsl"),
    shader!("embed_q5_1.wgsl"),
    shader!("embed_q5_k.wgsl"),
    shader!("embed_q6_k.wgsl"),
    shader!("embed_q8_0.wgsl"),
    shader!("matmul_coop_f16.wgsl"),
    shader!("matmul_coop_f32.wgsl"),
    shader!("matmul_coop_q4_0.wgsl"),
    shader!("matmul_coop_q4_1.wgsl"),
    shader!("matmul_coop_q4_k.wgsl"),
    shader!("matmul_coop_q5_0.wgsl"),
    shader!("matmul_coop_q5_1.wgsl"),
    shader!("matmul_coop_q5_k.wgsl"),
    shader!("matmul_coop_q6_k.wgsl"),
    shader!("matmul_coop_q8_0.wgsl"),
    shader!("matmul_f16.wgsl"),
    shader!("matmul_f32.wgsl"),
    shader!("matmul_q4_0.wgsl"),
    shader!("matmul_q4_1.wgsl"),
    shader!("matmul_q4_k.wgsl"),
    shader!("matmul_q5_0.wgsl"),
    shader!("matmul_q5_1.wgsl"),
    shader!("matmul_q5_k.wgsl"),
    shader!("matmul_q6_k.wgsl"),
    shader!("matmul_q8_0.wgsl"),
    shader!("matvec_f16.wgsl"),
    shader!("matvec_f32.wgsl"),
    shader!("matvec_q4_0.wgsl"),
    shader!("matvec_q4_1.wgsl"),
    shader!("matvec_q4_k.wgsl"),
    shader!("matvec_q5_0.wgsl"),
    shader!("matvec_q5_1.wgsl"),
    shader!("matvec_q5_k.wgsl"),
    shader!("matvec_q6_k.wgsl"),
    shader!("matvec_planes_q4_k.wgsl"),
    shader!("matvec_planes_q6_k.wgsl"),
    shader!("matvec_q8_0.wgsl"),
    shader!("rms_norm.wgsl"),
    shader!("rope_kv_write_interleaved.wgsl"),
    shader!("rope_kv_write_neox.wgsl"),
    shader!("swiglu.wgsl"),
    shader!("top_k.wgsl"),
    shader!("common/attention_combine.wgsl"),
    shader!("common/attention_decode_body.wgsl"),
    shader!("common/attention_params.wgsl"),
    shader!("common/dequant_f16.wgsl"),
    shader!("common/dequant_f32.wgsl"),
    shader!("common/dequant_q4_0.wgsl"),
    shader!("common/dequant_q4_1.wgsl"),
    shader!("common/dequant_q4_k.wgsl"),
    shader!("common/dequant_q5_0.wgsl"),
    shader!("common/dequant_q5_1.wgsl"),
    shader!("common/dequant_q5_k.wgsl"),
    shader!("common/dequant_q6_k.wgsl"),
    shader!("common/dequant_q8_0.wgsl"),
    shader!("common/dq8.wgsl"),
    shader!("common/embed_body.wgsl"),
    shader!("common/grid.wgsl"),
    shader!("common/k_scales.wgsl"),
    shader!("common/matmul_body.wgsl"),
    shader!("common/matmul_coop_body.wgsl"),
    shader!("common/matmul_params.wgsl"),
    shader!("common/matmul_struct.wgsl"),
    shader!("common/matvec_body.wgsl"),
    shader!("common/matvec_f32_entries.wgsl"),
    shader!("common/matvec_q4_k_f32.wgsl"),
    shader!("common/matvec_q6_k_f32.wgsl"),
    shader!("common/matvec_rows.wgsl"),
    shader!("common/planes.wgsl"),
    shader!("common/planes_matvec.wgsl"),
    shader!("common/q5_bits.wgsl"),
    shader!("common/rope_kv_write_body.wgsl"),
    shader!("common/rope_pair.wgsl"),
    shader!("common/row_sum.wgsl"),
];

/// The text of a file under `shaders/`.
pub fn file(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, text)| *text)
}

fn kernel_err(kernel: KernelId, detail: impl Into<String>) -> EngineError {
    EngineError::Kernel { kernel: format!("{kernel:?}"), detail: detail.into() }
}

/// Weight formats with GPU kernels (BF16 is widened to F32 at load).
pub const GPU_FORMATS: [WeightFormat; 10] = {
    use crate::quant::GgmlType::*;
    [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K]
};

fn format_suffix(kernel: KernelId, format: WeightFormat) -> Result<String> {
    if GPU_FORMATS.contains(&format) {
        Ok(format.name().to_ascii_lowercase())
    } else {
        Err(kernel_err(kernel, format!("no GPU kernel for {} weights", format.name())))
    }
}

/// The kernel file of `kernel`, relative to `shaders/`.
pub fn kernel_file(kernel: KernelId) -> Result<String> {
    Ok(match kernel {
        KernelId::Embed(f) => format!("embed_{}.wgsl", format_suffix(kernel, f)?),
        KernelId::MatVec(f) => format!("matvec_{}.wgsl", format_suffix(kernel, f)?),
        KernelId::MatMul(f) => format!("matmul_{}.wgsl", format_suffix(kernel, f)?),
        KernelId::RmsNorm => "rms_norm.wgsl".into(),
        KernelId::AddRmsNorm => "add_rms_norm.wgsl".into(),
        KernelId::RopeKvWriteNeox => "rope_kv_write_neox.wgsl".into(),
        KernelId::RopeKvWriteInterleaved => "rope_kv_write_interleaved.wgsl".into(),
        KernelId::Attention => "attention.wgsl".into(),
        KernelId::AttentionDecode => "attention_decode.wgsl".into(),
        KernelId::RopeAttentionDecode => "rope_attention_decode.wgsl".into(),
        KernelId::SwiGlu => "swiglu.wgsl".into(),
        KernelId::Add => "add.wgsl".into(),
        KernelId::Argmax => "argmax.wgsl".into(),
        KernelId::TopK => "top_k.wgsl".into(),
    })
}

/// Kernel files a device runs in place of the portable ones, by what its GPU offers. The
/// variants keep the bindings of the kernel they replace (plus the device scratch for the
/// planes matvecs) and their own dispatch plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variants {
    /// MatMul on cooperative matrices (matmul_coop_<format>.wgsl; `plan_for` picks the tile).
    pub tensor_cores: bool,
    /// Decode matvecs on integer dot products over 8-bit planes of the activations
    /// (matvec_planes_<format>.wgsl, formats of `is_planes_matvec`): a `quantize` dispatch
    /// into the device scratch, then the matvec.
    pub planes_matvecs: bool,
    /// Fewest weights for which a planes matvec quantizes (None: `PLANES_MIN_WEIGHTS`); tests
    /// lower it to run the planes path on small models.
    pub planes_min_weights: Option<u64>,
    /// Prefill attention on 64-row workgroups (attention.wgsl `prefill_wide`), which need
    /// `WIDE_PREFILL_ATTENTION_BYTES` of workgroup memory (WebGPU's default limit is 16 KiB).
    pub wide_attention: bool,
}

impl Variants {
    /// ", tensor-core matmuls, planes matvecs" for the variants that are on (device names).
    pub fn describe(&self) -> String {
        let on = [
            (self.tensor_cores, ", tensor-core matmuls"),
            (self.planes_matvecs, ", planes matvecs"),
            (self.wide_attention, ", wide prefill attention"),
        ];
        on.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect()
    }
}

/// Entry points of a planes matvec file: the planes matvec by threads per pair of rows, its
/// `quantize`, then the f32 kernel's entry points (common/matvec_f32_entries.wgsl) in the same order.
const PLANES_ENTRIES: &[&str] = &["main", "lanes64", "lanes128", "quantize", "f32_main", "f32_lanes64", "f32_lanes128"];
const PLANES_QUANTIZE_ENTRY: usize = 3;
const PLANES_F32_ENTRIES: usize = 4;

/// Entry points of the ops whose output row planes matvecs read (add_rms_norm.wgsl, swiglu.wgsl)
/// on a device with planes matvecs: `planes_main` also writes the row's planes (`pass_plans`).
const PLANES_PRODUCER_ENTRIES: &[&str] = &["main", "planes_main"];
const PLANES_PRODUCER_ENTRY: usize = 1;
/// add_rms_norm.wgsl's entry points with planes matvecs (`planes_main` at PLANES_PRODUCER_ENTRY).
const ADD_RMS_NORM_PLANES_ENTRIES: &[&str] = &["main", "planes_main", "row_slices"];

/// Columns per workgroup of add_rms_norm.wgsl's one-row entries (`row_slices`, `planes_main`).
const ADD_RMS_NORM_SLICE_COLUMNS: u64 = 1024;

/// Elements per workgroup of swiglu.wgsl `planes_main` (256 threads, four elements each).
const SWIGLU_PLANES_ELEMENTS: u64 = 1024;

/// Whether `format` has a planes matvec (matvec_planes_<format>.wgsl).
pub fn is_planes_matvec(format: WeightFormat) -> bool {
    matches!(format, crate::quant::GgmlType::Q4_K | crate::quant::GgmlType::Q6_K)
}

fn uses_planes(kernel: KernelId, variants: Variants) -> bool {
    matches!(kernel, KernelId::MatVec(f) if variants.planes_matvecs && is_planes_matvec(f))
}

/// The file of `kernel` on a device with `variants`.
pub fn kernel_file_for(kernel: KernelId, variants: Variants) -> Result<String> {
    match kernel {
        KernelId::MatMul(f) if variants.tensor_cores => Ok(format!("matmul_coop_{}.wgsl", format_suffix(kernel, f)?)),
        KernelId::MatVec(f) if uses_planes(kernel, variants) => Ok(format!("matvec_planes_{}.wgsl", format_suffix(kernel, f)?)),
        _ => kernel_file(kernel),
    }
}

/// The preprocessed WGSL of `kernel`.
pub fn kernel_source(kernel: KernelId) -> Result<Preprocessed> {
    kernel_source_for(kernel, Variants::default())
}

/// The preprocessed WGSL of `kernel`'s file on a device with `variants`.
pub fn kernel_source_for(kernel: KernelId, variants: Variants) -> Result<Preprocessed> {
    let path = kernel_file_for(kernel, variants)?;
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(dir) = std::env::var_os("QWGLM_SHADER_DIR") {
        return kernel_source_from(kernel, &path, std::path::Path::new(&dir));
    }
    preprocess::preprocess(&path, &file).map_err(|e| kernel_err(kernel, e))
}

/// Kernel development aid (native only): with `QWGLM_SHADER_DIR` set, the files present in that
/// directory replace the built-in ones, so kernel variants can be timed on a GPU machine without
/// rebuilding the binary (the dispatch geometry stays the binary's).
#[cfg(not(target_arch = "wasm32"))]
fn kernel_source_from(kernel: KernelId, path: &str, dir: &std::path::Path) -> Result<Preprocessed> {
    let files: std::collections::HashMap<&str, String> = FILES
        .iter()
        .map(|(name, text)| (*name, std::fs::read_to_string(dir.join(name)).unwrap_or_else(|_| text.to_string())))
        .collect();
    preprocess::preprocess(path, &|name| files.get(name).map(String::as_str)).map_err(|e| kernel_err(kernel, e))
}

/// Every kernel id with a WGSL file: what the GPU devices can run.
pub fn all_kernels() -> Vec<KernelId> {
    let mut ids = Vec::new();
    for f in GPU_FORMATS {
        ids.extend([KernelId::Embed(f), KernelId::MatVec(f), KernelId::MatMul(f)]);
    }
    ids.extend([
        KernelId::RmsNorm,
        KernelId::AddRmsNorm,
        KernelId::RopeKvWriteNeox,
        KernelId::RopeKvWriteInterleaved,
        KernelId::Attention,
        KernelId::AttentionDecode,
        KernelId::RopeAttentionDecode,
        KernelId::SwiGlu,
        KernelId::Add,
        KernelId::Argmax,
        KernelId::TopK,
    ]);
    ids
}

/// Entry points of a kernel, in the order `plan` refers to them.
pub fn entry_points(kernel: KernelId) -> &'static [&'static str] {
    match kernel {
        KernelId::Attention => &["partial", "combine", "decode", "prefill"],
        KernelId::AttentionDecode => &["decode", "combine", "wide"],
        // `wide_planes` / `combine_planes` also write the output row's planes (`pass_plans`).
        KernelId::RopeAttentionDecode => &["decode", "combine", "wide", "wide_planes", "combine_planes"],
        KernelId::Argmax => &["partial", "finish"],
        KernelId::TopK => &["partial", "merge", "finish"],
        KernelId::AddRmsNorm => &["main", "row_slices"],
        KernelId::MatVec(format) if is_pair_matvec(format) => &["main", "lanes64", "lanes128", "lanes8", "lanes16"],
        _ => &["main"],
    }
}

/// Entry points of `kernel`'s file on a device with `variants` (`kernel_file_for`).
pub fn entry_points_for(kernel: KernelId, variants: Variants) -> &'static [&'static str] {
    match kernel {
        KernelId::MatMul(_) if variants.tensor_cores => &["main", "rows128", "wide"],
        KernelId::Attention if variants.wide_attention => &["partial", "combine", "decode", "prefill", "prefill_wide"],
        KernelId::MatVec(_) if uses_planes(kernel, variants) => PLANES_ENTRIES,
        KernelId::AddRmsNorm if variants.planes_matvecs => ADD_RMS_NORM_PLANES_ENTRIES,
        KernelId::SwiGlu if variants.planes_matvecs => PLANES_PRODUCER_ENTRIES,
        _ => entry_points(kernel),
    }
}

/// Fewest workgroups for which the tensor-core MatMul takes 128 activation rows per workgroup
/// (`rows128`) instead of 64: fewer dequantizations of each weight tile, but half the
/// workgroups. H200 pp512 (132 SMs): the 8B's matmuls (256..1792 workgroups of 128 rows) were
/// faster with 128 rows (1,996 vs 1,828 tok/s), the 0.5B's (56..608) slower (15,200 vs 16,100).
const COOP_ROWS128_MIN_WORKGROUPS: u64 = 256;

/// Fewest workgroups for which the tensor-core MatMul takes 128 x 128 tiles (`wide`). H200 pp512:
/// the 8B's gate|up (896 such workgroups) 4.4 -> 3.1 ms; smaller matrices keep 64-row weight
/// tiles (the 8B's q / down projections would get only 128 workgroups for 132 SMs).
const COOP_WIDE_MIN_WORKGROUPS: u64 = 512;

/// What a storage binding (binding 1, 2, ...) is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A buffer of the op (`Op::bindings` order).
    Buffer(crate::device::BufferId),
    /// A small read-only placeholder, for MatMul without bias (one layout for both cases).
    Dummy,
    /// Device-owned scratch of `scratch_bytes(op)` bytes, for the partial results of ops that run
    /// in two dispatches (attention splits, argmax chunks). Ops of one pass run in order, so they
    /// share it.
    Scratch,
}

/// Storage bindings of an op in binding order (binding 0, the params uniform, excluded).
pub fn slots(op: &Op) -> Vec<Slot> {
    slots_for(op, Variants::default())
}

/// `slots` on a device with `variants`.
pub fn slots_for(op: &Op, variants: Variants) -> Vec<Slot> {
    let mut slots: Vec<Slot> = op.bindings().into_iter().map(Slot::Buffer).collect();
    match op {
        Op::MatMul { bias: None, .. } => slots.insert(2, Slot::Dummy),
        Op::RopeKvWrite { q_norm: None, k_norm: None, .. } => {
            slots.insert(2, Slot::Dummy);
            slots.insert(3, Slot::Dummy);
        }
        Op::RopeAttention { q_norm, k_norm, .. } => {
            if q_norm.is_none() && k_norm.is_none() {
                slots.insert(2, Slot::Dummy);
                slots.insert(3, Slot::Dummy);
            }
            slots.push(Slot::Scratch);
        }
        Op::Attention { .. } | Op::Argmax { .. } | Op::TopK { .. } => slots.push(Slot::Scratch),
        _ => {}
    }
    if uses_planes(op.kernel_id(), variants) || (variants.planes_matvecs && matches!(op, Op::AddRmsNorm { .. } | Op::SwiGlu { .. })) {
        slots.push(Slot::Scratch);
    }
    slots
}

/// Fewest weights for which a planes matvec quantizes its activations: below, the `quantize`
/// dispatch costs more than the integer dot products save. H200, decode tg128 (docs/PERF.md pass
/// 7), thresholds 2^20 / 2^22 / 2^24 / 2^25: 8B 216.4 / 216.3 / 218.0 / 209.2 tok/s, 0.5B 571 /
/// 572 / 588 / - (its Q4_K / Q6_K matrices have 1-5 M weights).
pub const PLANES_MIN_WEIGHTS: u64 = 1 << 24;

/// Whether `op` quantizes its activations into planes on a device with `variants` (else a
/// planes kernel runs its f32 entry points).
fn is_planes_op(op: &Op, variants: Variants) -> bool {
    let min_weights = variants.planes_min_weights.unwrap_or(PLANES_MIN_WEIGHTS);
    matches!(op, Op::MatMul { p, .. } if p.m == 1 && p.n as u64 * p.k as u64 >= min_weights)
        && uses_planes(op.kernel_id(), variants)
}

/// `(storage bindings, of which the last ones are read_write)` of a kernel's layout.
pub fn storage_layout(kernel: KernelId) -> (usize, usize) {
    storage_layout_for(kernel, Variants::default())
}

/// `storage_layout` of `kernel`'s file on a device with `variants`.
pub fn storage_layout_for(kernel: KernelId, variants: Variants) -> (usize, usize) {
    if uses_planes(kernel, variants) {
        return (5, 2); // + the planes scratch
    }
    match kernel {
        // + the planes scratch of `planes_main`
        KernelId::AddRmsNorm if variants.planes_matvecs => (6, 3),
        KernelId::SwiGlu if variants.planes_matvecs => (3, 2),
        KernelId::Embed(_) | KernelId::RmsNorm => (3, 1),
        KernelId::AddRmsNorm => (5, 2),
        KernelId::RopeKvWriteNeox | KernelId::RopeKvWriteInterleaved => (7, 3),
        KernelId::MatVec(_) | KernelId::MatMul(_) => (4, 1),
        KernelId::Attention | KernelId::AttentionDecode => (5, 2),
        KernelId::RopeAttentionDecode => (8, 4),
        KernelId::SwiGlu | KernelId::Add => (2, 1),
        KernelId::Argmax | KernelId::TopK => (3, 2),
    }
}

/// Whether `format`'s matvec kernel gives each pair of rows its own threads
/// (shaders/common/matvec_rows.wgsl: entry points by threads per pair).
fn is_pair_matvec(format: WeightFormat) -> bool {
    use crate::quant::GgmlType::*;
    matches!(format, Q8_0 | Q5_0 | Q4_K | Q6_K)
}

/// Threads per workgroup of the pair matvecs (`THREADS` of shaders/common/matvec_rows.wgsl).
const PAIR_MATVEC_THREADS: u64 = 128;

/// Fewest workgroups a pair matvec should launch before it gives each pair of rows more threads.
/// Measured on an H200 (132 SMs; docs/PERF.md pass 5): 1024 beat 0 (always 32 threads), 2048,
/// 4096 and "always 128" on the 0.5B / 0.6B / 8B shapes; on smaller GPUs the wider entry points
/// cost little.
const PAIR_MATVEC_MIN_WORKGROUPS: u64 = 1024;

/// Fewest workgroups for which a pair matvec over short rows takes 8 or 16 threads a pair.
const NARROW_MIN_WORKGROUPS: u64 = 512;

/// Threads per pair of rows (and so the entry point) of a pair matvec with `n` rows of `k`: 32 (8
/// rows per workgroup) unless that gives fewer than PAIR_MATVEC_MIN_WORKGROUPS workgroups, then 64
/// or 128, so matrices with few rows and a long k (down projections) still fill the GPU.
/// Q8_0 / Q5_0 rows under 64 blocks (a small hidden size) get 8 or 16 threads a pair where that
/// still launches NARROW_MIN_WORKGROUPS workgroups and leaves each thread a block, and never more
/// threads a pair than their blocks rounded up to a power of two: 32 threads a pair over 28 blocks
/// left 4 idle and did one block each before a five-step reduction, 128 left 100 idle. H200,
/// Qwen2.5-0.5B decode (docs/PERF.md pass 9): its output head 103 -> 88 µs; gate|up on 16 threads
/// a pair and q|k / o / v capped at 32: 649 -> 667 tok/s. Q4_K / Q6_K keep 32 and up (their
/// planes files have no narrower entry points).
fn pair_matvec_lanes(format: WeightFormat, n: u64, k: u64) -> u64 {
    let workgroups = |lanes: u64| n.div_ceil(2 * PAIR_MATVEC_THREADS / lanes);
    let wide = || [32, 64].into_iter().find(|&lanes| workgroups(lanes) >= PAIR_MATVEC_MIN_WORKGROUPS).unwrap_or(128);
    let blocks = k / format.block_elems().max(1) as u64;
    let short_rows = matches!(format, crate::quant::GgmlType::Q8_0 | crate::quant::GgmlType::Q5_0) && blocks < 64;
    if !short_rows {
        return wide();
    }
    let lanes = [8, 16].into_iter().find(|&lanes| blocks >= lanes && workgroups(lanes) >= NARROW_MIN_WORKGROUPS).unwrap_or_else(wide);
    lanes.min(blocks.next_power_of_two().max(8))
}

/// Output rows per workgroup and entry point of the matvec kernel for `format` with `n` rows:
/// `2 * THREADS / lanes` of shaders/common/matvec_rows.wgsl for the pair kernels, else
/// `ROWS_PER_WORKGROUP` of shaders/common/matvec_body.wgsl.
pub fn matvec_rows_per_workgroup(format: WeightFormat, n: u64, k: u64) -> (u64, usize) {
    if is_pair_matvec(format) {
        let lanes = pair_matvec_lanes(format, n, k);
        // Entry points in `entry_points` order: main (32), lanes64, lanes128, lanes8, lanes16.
        let entry = match lanes {
            8 => 3,
            16 => 4,
            _ => lanes.trailing_zeros() as usize - 5,
        };
        (2 * PAIR_MATVEC_THREADS / lanes, entry)
    } else {
        (2, 0)
    }
}

/// One dispatch of an entry point (index into `entry_points`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub entry: usize,
    pub workgroups: [u32; 3],
}

/// Folds `total` workgroups of a 1-D grid into (x <= 65535, y); kernels unfold with
/// `linear_workgroup` (shaders/common/grid.wgsl) and skip the overhang.
pub fn grid(total: u32) -> [u32; 3] {
    if total <= MAX_WORKGROUPS_PER_DIM {
        [total, 1, 1]
    } else {
        [MAX_WORKGROUPS_PER_DIM, total.div_ceil(MAX_WORKGROUPS_PER_DIM), 1]
    }
}

/// Largest head_dim of the one-token `decode` entry point of shaders/attention.wgsl.
const DECODE_ATTENTION_MAX_DIM: u32 = 256;

/// Largest head_dim of the tiled `prefill` entry point of shaders/attention.wgsl (`PREFILL_MAX_DIM`).
const PREFILL_ATTENTION_MAX_DIM: u32 = 128;

/// Query rows per workgroup of the `prefill` entry point (`PREFILL_ROWS`).
const PREFILL_ATTENTION_ROWS: u64 = 16;

/// Query rows per workgroup of the `prefill_wide` entry point (`WIDE_ROWS`).
const WIDE_PREFILL_ATTENTION_ROWS: u64 = 64;

/// Workgroup memory of attention.wgsl `prefill_wide`: two 16-key x 128-dim f32 tiles and 16 x 128
/// half scores.
pub const WIDE_PREFILL_ATTENTION_BYTES: u32 = 24 * 1024;

/// Query rows per attention workgroup (shaders/attention.wgsl `rows_per_workgroup`).
fn attention_rows(head_dim: u32) -> u32 {
    (1024 / head_dim.max(1)).min(16)
}

/// Logits per workgroup of the argmax `partial` entry point (`CHUNK` of shaders/argmax.wgsl).
pub const ARGMAX_CHUNK: u32 = 1024;

/// Values sorted per workgroup of shaders/top_k.wgsl (`SORTED`), and lists merged per sort.
const TOP_K_CHUNK: u32 = 1024;
const TOP_K_LISTS_PER_SORT: u64 = 16;

/// Elements per group of the planes matvecs (`GROUP_ELEMENTS` of matvec_planes_<format>.wgsl).
const PLANES_GROUP: u64 = 16;

/// Groups per workgroup of their `quantize` entry point.
const PLANES_QUANTIZE_GROUPS: u64 = 64;

/// Bytes of the device scratch (`Slot::Scratch`) an op needs for its partial results.
pub fn scratch_bytes(op: &Op) -> u64 {
    scratch_bytes_for(op, Variants::default())
}

/// `scratch_bytes` on a device with `variants`.
pub fn scratch_bytes_for(op: &Op, variants: Variants) -> u64 {
    if let (true, Op::MatMul { p, .. }) = (is_planes_op(op, variants), op) {
        return planes_bytes(p.k);
    }
    if let (true, Some((_, k)), false) = (variants.planes_matvecs, planes_producer_row(op), matches!(op, Op::RopeAttention { .. })) {
        return planes_bytes(k);
    }
    match op {
        Op::Attention { p, .. } => {
            p.n_tokens as u64 * p.n_heads as u64 * p.kv_splits.max(1) as u64 * (p.head_dim as u64 + 2) * 4
        }
        // The planes of its output row, then the splits' partials (rope_attention_decode.wgsl).
        Op::RopeAttention { p, .. } => {
            planes_bytes(p.n_heads.saturating_mul(p.head_dim)) + p.n_heads as u64 * p.kv_splits.max(1) as u64 * (p.head_dim as u64 + 2) * 4
        }
        // (value bits, index) per chunk.
        Op::Argmax { p, .. } => p.n.div_ceil(ARGMAX_CHUNK) as u64 * 8,
        // Lists of TOP_K_MAX (id, key) pairs: one per chunk (region A), one per 16 of those (B).
        Op::TopK { p, .. } => {
            let lists_a = p.n.div_ceil(TOP_K_CHUNK) as u64;
            (lists_a + lists_a.div_ceil(TOP_K_LISTS_PER_SORT)) * crate::kernels::TOP_K_MAX as u64 * 8
        }
        _ => 0,
    }
}

/// Bytes of the planes of a row of `k` activations: three 16-byte planes per group, then
/// (s, sum) per group.
fn planes_bytes(k: u32) -> u64 {
    let groups = k as u64 / PLANES_GROUP;
    groups * 48 + groups.div_ceil(2) * 16
}

/// `(out, k)` of an op whose `planes_main` entry point can write the planes of its one output
/// row of `k` activations (AddRmsNorm of one row, SwiGlu of one token; RopeAttention through its
/// `wide_planes` / `combine_planes` entry points).
fn planes_producer_row(op: &Op) -> Option<(crate::device::BufferId, u32)> {
    match *op {
        Op::RopeAttention { out, p, .. } if p.head_dim.is_power_of_two() && p.head_dim >= 16 => Some((out, p.n_heads.checked_mul(p.head_dim)?)),
        Op::AddRmsNorm { out, p, .. } if p.n_rows == 1 && p.n_cols as u64 % PLANES_GROUP == 0 => Some((out, p.n_cols)),
        Op::SwiGlu { out, p, .. } if p.n_tokens == 1 && p.width as u64 % PLANES_GROUP == 0 => Some((out, p.width)),
        _ => None,
    }
}

/// The activation row a planes matvec quantizes: `(x, x_row, k)`.
type PlanesRow = (crate::device::BufferId, u32, u32);

fn planes_input(op: &Op, variants: Variants) -> Option<PlanesRow> {
    match *op {
        Op::MatMul { x, p, .. } if is_planes_op(op, variants) => Some((x, p.x_row, p.k)),
        _ => None,
    }
}

/// The activation row of a one-row matvec with a planes kernel below PLANES_MIN_WEIGHTS: it runs
/// the f32 entry points, unless the scratch already holds its row as planes (then the planes
/// matvec, with no `quantize` to pay for: the Llama-3-8B's v projection, Q6_K 1024x4096, after
/// q|k on the same normalised row).
fn small_planes_input(op: &Op, variants: Variants) -> Option<PlanesRow> {
    match *op {
        Op::MatMul { x, p, .. } if p.m == 1 && uses_planes(op.kernel_id(), variants) && !is_planes_op(op, variants) => Some((x, p.x_row, p.k)),
        _ => None,
    }
}

/// Whether `op` writes `buf` (one of its read_write bindings).
fn writes(op: &Op, buf: crate::device::BufferId, variants: Variants) -> bool {
    let slots = slots_for(op, variants);
    let (_, writable) = storage_layout_for(op.kernel_id(), variants);
    slots[slots.len().saturating_sub(writable)..].contains(&Slot::Buffer(buf))
}

/// The dispatches of a pass of ops (run in order, sharing the device scratch): `plan_for` of
/// each op, except that a planes matvec whose activation row is already in the scratch as
/// planes skips its `quantize` dispatch. The row got there from the op that produced it
/// (AddRmsNorm, SwiGlu: their `planes_main` entry point, picked when the next op to touch the
/// scratch is a planes matvec reading that row) or from the previous planes matvec on the same
/// row. H200, Llama-3-8B decode: 3 of the 4 `quantize` dispatches a layer go (docs/PERF.md pass 8).
pub fn pass_plans(pass: &[Op], variants: Variants) -> Result<Vec<Vec<Dispatch>>> {
    let mut plans = pass.iter().map(|op| plan_for(op, variants)).collect::<Result<Vec<_>>>()?;
    if !variants.planes_matvecs {
        return Ok(plans);
    }
    // The row whose planes the scratch holds after the ops so far.
    let mut held: Option<PlanesRow> = None;
    for (i, op) in pass.iter().enumerate() {
        if let Some(row) = planes_input(op, variants) {
            if held == Some(row) && plans[i].len() == 2 {
                plans[i].remove(0);
            }
            held = Some(row);
            continue;
        }
        if small_planes_input(op, variants).is_some_and(|row| held == Some(row)) {
            if let [dispatch] = plans[i].as_mut_slice() {
                dispatch.entry = dispatch.entry.checked_sub(PLANES_F32_ENTRIES).unwrap_or(dispatch.entry);
            }
        }
        if let Some((out, k)) = planes_producer_row(op) {
            let row = (out, 0, k);
            if let Op::RopeAttention { .. } = op {
                // `wide` -> `wide_planes` (one split), or `combine` -> `combine_planes`.
                if next_planes_reader(&pass[i + 1..], row, variants) {
                    if let Some(last) = plans[i].last_mut() {
                        last.entry = if last.entry == 2 { 3 } else { 4 };
                        held = Some(row);
                        continue;
                    }
                }
                held = None;
                continue;
            }
            if next_planes_reader(&pass[i + 1..], row, variants) && plans[i].len() == 1 {
                let per_workgroup = match op {
                    Op::SwiGlu { .. } => SWIGLU_PLANES_ELEMENTS,
                    _ => ADD_RMS_NORM_SLICE_COLUMNS,
                };
                let workgroups = u32::try_from((k as u64).div_ceil(per_workgroup)).map_err(|_| kernel_err(op.kernel_id(), "too many workgroups"))?;
                let workgroups = match op {
                    Op::SwiGlu { .. } => grid(workgroups),
                    _ => [workgroups, 1, 1],
                };
                plans[i] = vec![Dispatch { entry: PLANES_PRODUCER_ENTRY, workgroups }];
                held = Some(row);
                continue;
            }
        }
        if held.is_some_and(|(buf, _, _)| writes(op, buf, variants)) || overwrites_scratch(op, variants) {
            held = None;
        }
    }
    Ok(plans)
}

/// Whether `op` (not a planes matvec) leaves partial results of its own in the scratch
/// (attention splits, argmax chunks, top-k lists); planes producers write it only when
/// `pass_plans` gives them `planes_main`.
fn overwrites_scratch(op: &Op, variants: Variants) -> bool {
    scratch_bytes_for(op, variants) > 0 && (planes_producer_row(op).is_none() || matches!(op, Op::RopeAttention { .. }))
}

/// Whether the first of `rest` that touches the scratch is a planes matvec reading `row` (or a
/// small one that then reads the planes too: `small_planes_input`), with nothing before it
/// writing `row`'s buffer.
fn next_planes_reader(rest: &[Op], row: PlanesRow, variants: Variants) -> bool {
    for op in rest {
        if let Some(input) = planes_input(op, variants) {
            return input == row;
        }
        if small_planes_input(op, variants) == Some(row) {
            return true;
        }
        if writes(op, row.0, variants) || overwrites_scratch(op, variants) {
            return false;
        }
    }
    false
}

/// The dispatches that run `op`, in order; empty when the op has nothing to do. Shapes that the
/// kernels cannot handle are errors here, before anything reaches a device.
pub fn plan(op: &Op) -> Result<Vec<Dispatch>> {
    plan_for(op, Variants::default())
}

/// attention_decode.wgsl / rope_attention_decode.wgsl: `decode` or `wide` (256 threads, for
/// head_dim 16, 32, ..., 256: its work splits evenly) per (head, split), then `combine` when there
/// are several splits (with one, the decode workgroups write the output themselves).
fn decode_attention_dispatches(p: &crate::kernels::AttentionParams, combine: [u32; 3], heads: u32) -> Vec<Dispatch> {
    let entry = if p.head_dim.is_power_of_two() && p.head_dim >= 16 { 2 } else { 0 };
    let decode = Dispatch { entry, workgroups: [heads, p.kv_splits, 1] };
    if p.kv_splits == 1 {
        vec![decode]
    } else {
        vec![decode, Dispatch { entry: 1, workgroups: combine }]
    }
}

/// `plan` on a device with `variants`.
pub fn plan_for(op: &Op, variants: Variants) -> Result<Vec<Dispatch>> {
    let kernel = op.kernel_id();
    let one = |workgroups: [u32; 3]| {
        let empty = workgroups.contains(&0);
        Ok(if empty { Vec::new() } else { vec![Dispatch { entry: 0, workgroups }] })
    };
    let dim = |n: u64, what: &str| -> Result<u32> {
        u32::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_WORKGROUPS_PER_DIM)
            .ok_or_else(|| kernel_err(kernel, format!("{what} needs {n} workgroups in one dimension")))
    };
    let folded = |n: u64| -> Result<[u32; 3]> {
        let n = u32::try_from(n).map_err(|_| kernel_err(kernel, "too many workgroups"))?;
        let g = grid(n);
        if g[1] > MAX_WORKGROUPS_PER_DIM {
            return Err(kernel_err(kernel, "too many workgroups"));
        }
        Ok(g)
    };
    match op {
        Op::Embed { p, .. } => one([dim((p.hidden as u64).div_ceil(8).div_ceil(64), "hidden")?, dim(p.n_tokens as u64, "tokens")?, 1]),
        // One row: several workgroups, each summing the squares of the whole row (`row_slices`).
        Op::AddRmsNorm { p, .. } if p.n_rows == 1 && p.n_cols % 4 == 0 => {
            let entry = entry_points_for(kernel, variants).iter().position(|e| *e == "row_slices").unwrap_or(0);
            let workgroups = dim((p.n_cols as u64).div_ceil(ADD_RMS_NORM_SLICE_COLUMNS), "columns")?;
            Ok(vec![Dispatch { entry, workgroups: [workgroups, 1, 1] }])
        }
        Op::RmsNorm { p, .. } | Op::AddRmsNorm { p, .. } => one(folded(p.n_rows as u64)?),
        Op::MatMul { w, p, .. } if p.m == 1 => {
            let (rows, entry) = matvec_rows_per_workgroup(w.format, p.n as u64, p.k as u64);
            let workgroups = folded((p.n as u64).div_ceil(rows))?;
            if workgroups.contains(&0) {
                return Ok(Vec::new());
            }
            if is_planes_op(op, variants) {
                let quantize = folded((p.k as u64 / PLANES_GROUP).div_ceil(PLANES_QUANTIZE_GROUPS))?;
                return Ok(vec![Dispatch { entry: PLANES_QUANTIZE_ENTRY, workgroups: quantize }, Dispatch { entry, workgroups }]);
            }
            let entry = if uses_planes(kernel, variants) { PLANES_F32_ENTRIES + entry } else { entry };
            Ok(vec![Dispatch { entry, workgroups }])
        }
        Op::MatMul { p, .. } if variants.tensor_cores => {
            let n_tiles = dim((p.n as u64).div_ceil(64), "n")?;
            let m128 = (p.m as u64).div_ceil(128);
            let wide_tiles = (p.n as u64).div_ceil(128) * m128;
            if wide_tiles >= COOP_WIDE_MIN_WORKGROUPS {
                Ok(vec![Dispatch { entry: 2, workgroups: [dim((p.n as u64).div_ceil(128), "n")?, dim(m128, "m")?, 1] }])
            } else if n_tiles as u64 * m128 >= COOP_ROWS128_MIN_WORKGROUPS {
                Ok(vec![Dispatch { entry: 1, workgroups: [n_tiles, dim(m128, "m")?, 1] }])
            } else {
                one([n_tiles, dim((p.m as u64).div_ceil(64), "m")?, 1])
            }
        }
        Op::MatMul { p, .. } => one([dim((p.n as u64).div_ceil(64), "n")?, dim((p.m as u64).div_ceil(64), "m")?, 1]),
        Op::RopeKvWrite { p, .. } => {
            one(folded(p.n_tokens as u64 * (p.n_heads as u64 + 2 * p.n_kv_heads as u64))?)
        }
        Op::SwiGlu { p, .. } => one(folded((p.n_tokens as u64 * p.width as u64).div_ceil(256))?),
        Op::Add { p, .. } => one(folded((p.n as u64).div_ceil(256))?),
        Op::Argmax { p, .. } => {
            if p.n == 0 {
                return Ok(Vec::new());
            }
            let partial = folded(p.n.div_ceil(ARGMAX_CHUNK) as u64)?;
            Ok(vec![Dispatch { entry: 0, workgroups: partial }, Dispatch { entry: 1, workgroups: [1, 1, 1] }])
        }
        Op::TopK { p, .. } => {
            let lists_a = p.n.div_ceil(TOP_K_CHUNK) as u64;
            let lists_b = lists_a.div_ceil(TOP_K_LISTS_PER_SORT);
            if lists_b > TOP_K_LISTS_PER_SORT {
                return Err(kernel_err(kernel, format!("{} values exceed the {} one top-k op takes", p.n, TOP_K_CHUNK as u64 * 256)));
            }
            if p.n == 0 {
                return Ok(Vec::new());
            }
            Ok(vec![
                Dispatch { entry: 0, workgroups: folded(lists_a)? },
                Dispatch { entry: 1, workgroups: [dim(lists_b, "top-k lists")?, 1, 1] },
                Dispatch { entry: 2, workgroups: [1, 1, 1] },
            ])
        }
        // Shapes checked by `Op::required_bytes` (every GPU device checks ops before planning).
        Op::RopeAttention { p, .. } => {
            let p = p.attention();
            if p.n_heads == 0 {
                return Ok(Vec::new());
            }
            Ok(decode_attention_dispatches(&p, folded(p.n_heads as u64)?, dim(p.n_heads as u64, "attention heads")?))
        }
        Op::Attention { p, .. } => {
            if p.n_kv_heads == 0 || p.n_heads % p.n_kv_heads != 0 {
                return Err(kernel_err(kernel, "n_heads must be a multiple of n_kv_heads"));
            }
            if p.head_dim == 0 || p.head_dim > 1024 {
                return Err(kernel_err(kernel, format!("head_dim {} is outside 1..=1024", p.head_dim)));
            }
            if p.kv_splits == 0 || p.kv_splits > crate::kernels::MAX_KV_SPLITS {
                return Err(kernel_err(kernel, format!("kv_splits {} is outside 1..={}", p.kv_splits, crate::kernels::MAX_KV_SPLITS)));
            }
            if p.n_tokens == 0 || p.n_heads == 0 {
                return Ok(Vec::new());
            }
            let combine = folded(p.n_tokens as u64 * p.n_heads as u64)?;
            if kernel == KernelId::AttentionDecode {
                return Ok(decode_attention_dispatches(p, combine, dim(p.n_heads as u64, "attention heads")?));
            }
            if p.n_tokens == 1 && p.head_dim <= DECODE_ATTENTION_MAX_DIM && p.head_dim % 2 == 0 {
                let decode = [dim(p.n_heads as u64, "attention heads")?, p.kv_splits, 1];
                return Ok(vec![Dispatch { entry: 2, workgroups: decode }, Dispatch { entry: 1, workgroups: combine }]);
            }
            let group = (p.n_heads / p.n_kv_heads) as u64;
            let with_combine = |first: Dispatch| if p.kv_splits == 1 { vec![first] } else { vec![first, Dispatch { entry: 1, workgroups: combine }] };
            if variants.wide_attention && p.n_tokens > 1 && p.head_dim <= PREFILL_ATTENTION_MAX_DIM && p.head_dim % 4 == 0 {
                let blocks = (p.n_tokens as u64 * group).div_ceil(WIDE_PREFILL_ATTENTION_ROWS);
                let rows = dim(p.n_kv_heads as u64 * blocks, "attention rows")?;
                return Ok(with_combine(Dispatch { entry: 4, workgroups: [rows, p.kv_splits, 1] }));
            }
            if p.n_tokens > 1 && p.head_dim <= PREFILL_ATTENTION_MAX_DIM {
                // Tiled causal kernel; with one split it writes `out` itself.
                let blocks = (p.n_tokens as u64 * group).div_ceil(PREFILL_ATTENTION_ROWS);
                let prefill = Dispatch { entry: 3, workgroups: [dim(p.n_kv_heads as u64 * blocks, "attention rows")?, p.kv_splits, 1] };
                return Ok(with_combine(prefill));
            }
            let blocks = (p.n_tokens as u64 * group).div_ceil(attention_rows(p.head_dim) as u64);
            let partial = [dim(p.n_kv_heads as u64 * blocks, "attention rows")?, p.kv_splits, 1];
            Ok(vec![Dispatch { entry: 0, workgroups: partial }, Dispatch { entry: 1, workgroups: combine }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_preprocesses() {
        for kernel in all_kernels() {
            let src = kernel_source(kernel).unwrap_or_else(|e| panic!("{kernel:?}: {e}"));
            assert!(src.source.contains("@compute"), "{kernel:?}");
            assert_eq!(src.source.lines().count(), src.line_map.len());
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn registry_lists_every_shader_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
        let mut on_disk = Vec::new();
        for dir in ["", "common/"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("shaders dir") {
                let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
                if name.ends_with(".wgsl") {
                    on_disk.push(format!("{dir}{name}"));
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "engine/src/shaders/mod.rs FILES must list every file in shaders/");
    }

    #[test]
    fn tensor_core_matmul_tiles() {
        use crate::device::BufferId;
        use crate::kernels::{MatMulParams, WeightBuf};
        use crate::quant::GgmlType;
        let op = |m: u32, n: u32, k: u32| Op::MatMul {
            w: WeightBuf { buf: BufferId(0), format: GgmlType::Q4_K, rows: n, cols: k },
            x: BufferId(1),
            bias: None,
            out: BufferId(2),
            p: MatMulParams { m, n, k, x_row: 0, has_bias: 0, out_stride: n, out_col: 0 },
        };
        let coop = Variants { tensor_cores: true, ..Default::default() };
        let tile = |m, n| {
            let plan = plan_for(&op(m, n, 4096), coop).unwrap();
            assert_eq!(plan.len(), 1);
            (entry_points_for(KernelId::MatMul(GgmlType::Q4_K), coop)[plan[0].entry], plan[0].workgroups)
        };
        // Llama-3-8B at pp512: gate|up 128 x 128 tiles, q / down 64 x 128, k|v (n = 1024) 64 x 64.
        assert_eq!(tile(512, 28672), ("wide", [224, 4, 1]));
        assert_eq!(tile(512, 4096), ("rows128", [64, 4, 1]));
        assert_eq!(tile(512, 1024), ("main", [16, 8, 1]));
        // Partial tiles round up; nothing to do is no dispatch.
        assert_eq!(tile(129, 32770), ("wide", [257, 2, 1]));
        assert!(plan_for(&op(0, 4096, 4096), coop).unwrap().is_empty());
        // Without tensor cores: the f32 kernel's 64 x 64 tiles.
        assert_eq!(plan(&op(512, 28672, 4096)).unwrap()[0].workgroups, [448, 8, 1]);
        assert_eq!(kernel_file_for(KernelId::MatMul(GgmlType::Q4_K), coop).unwrap(), "matmul_coop_q4_k.wgsl");
        assert_eq!(kernel_file_for(KernelId::MatMul(GgmlType::Q4_K), Variants::default()).unwrap(), "matmul_q4_k.wgsl");
    }

    #[test]
    fn planes_matvec_plans() {
        use crate::device::BufferId;
        use crate::kernels::{MatMulParams, WeightBuf};
        use crate::quant::GgmlType;
        let op = |format, n: u32, k: u32| Op::MatMul {
            w: WeightBuf { buf: BufferId(0), format, rows: n, cols: k },
            x: BufferId(1),
            bias: None,
            out: BufferId(2),
            p: MatMulParams { m: 1, n, k, x_row: 0, has_bias: 0, out_stride: n, out_col: 0 },
        };
        let planes = Variants { planes_matvecs: true, ..Default::default() };
        let entries = |op: &Op| {
            let names = entry_points_for(op.kernel_id(), planes);
            plan_for(op, planes).unwrap().iter().map(|d| (names[d.entry], d.workgroups)).collect::<Vec<_>>()
        };
        // The 8B's gate|up (28672 x 4096): quantize 256 groups (4 workgroups of 64), then 32 threads per pair.
        let gate_up = op(GgmlType::Q4_K, 28672, 4096);
        assert_eq!(entries(&gate_up), vec![("quantize", [4, 1, 1]), ("main", [3584, 1, 1])]);
        assert_eq!(scratch_bytes_for(&gate_up, planes), 256 * 48 + 128 * 16);
        assert_eq!(slots_for(&gate_up, planes).last(), Some(&Slot::Scratch));
        // Below 2^24 weights: the planes file's f32 entry points, no quantize, scratch still bound.
        let small = op(GgmlType::Q4_K, 4864, 896 / 128 * 256);
        assert_eq!(entries(&small), vec![("f32_lanes64", [1216, 1, 1])]);
        assert_eq!(scratch_bytes_for(&small, planes), 0);
        assert_eq!(slots_for(&small, planes).len(), 5);
        // Q6_K's down projection (4096 x 14336): quantize 896 groups, 64 threads per pair.
        let q6 = op(GgmlType::Q6_K, 4096, 14336);
        assert_eq!(entries(&q6), vec![("quantize", [14, 1, 1]), ("lanes64", [1024, 1, 1])]);
        // Formats without a planes file and devices without the variant: unchanged.
        let q8 = op(GgmlType::Q8_0, 28672, 4096);
        assert_eq!(entries(&q8), vec![("main", [3584, 1, 1])]);
        assert_eq!(plan_for(&gate_up, Variants::default()).unwrap(), vec![Dispatch { entry: 0, workgroups: [3584, 1, 1] }]);
        assert_eq!(slots_for(&gate_up, Variants::default()).len(), 4);
        assert_eq!(kernel_file_for(gate_up.kernel_id(), planes).unwrap(), "matvec_planes_q4_k.wgsl");
        assert_eq!(storage_layout_for(gate_up.kernel_id(), planes), (5, 2));
        assert_eq!(planes.describe(), ", planes matvecs");
    }

    #[test]
    fn planes_producer_pass_plans() {
        use crate::device::BufferId;
        use crate::kernels::{ElementwiseParams, MatMulParams, RmsNormParams, SwiGluParams, WeightBuf};
        use crate::quant::GgmlType;
        let matvec = |format, n: u32, k: u32, x: u32, out: u32| Op::MatMul {
            w: WeightBuf { buf: BufferId(0), format, rows: n, cols: k },
            x: BufferId(x),
            bias: None,
            out: BufferId(out),
            p: MatMulParams { m: 1, n, k, x_row: 0, has_bias: 0, out_stride: n, out_col: 0 },
        };
        let norm = |rows: u32, out: u32| Op::AddRmsNorm {
            residual: BufferId(3),
            residual_out: BufferId(13),
            x: BufferId(4),
            weight: BufferId(5),
            out: BufferId(out),
            p: RmsNormParams { n_rows: rows, n_cols: 4096, eps: 1e-5 },
        };
        let planes = Variants { planes_matvecs: true, ..Default::default() };
        let names = |pass: &[Op], variants| {
            let plans = pass_plans(pass, variants).unwrap();
            pass.iter()
                .zip(plans)
                .map(|(op, plan)| plan.iter().map(|d| entry_points_for(op.kernel_id(), variants)[d.entry]).collect::<Vec<_>>().join("+"))
                .collect::<Vec<_>>()
        };
        // An 8B layer's FFN half: the norm and SwiGLU write the planes, gate|up and down skip
        // `quantize`; v (Q6_K, below 2^24 weights: f32 entries) between q|k and nothing else in
        // the way leaves the planes of the norm's output for a second matvec on it.
        let swiglu = Op::SwiGlu { gate_up: BufferId(7), out: BufferId(8), p: SwiGluParams { n_tokens: 1, width: 14336 } };
        let layer = [
            norm(1, 6),
            matvec(GgmlType::Q4_K, 5120, 4096, 6, 9),
            matvec(GgmlType::Q6_K, 1024, 4096, 6, 10),
            matvec(GgmlType::Q4_K, 28672, 4096, 6, 7),
            swiglu,
            matvec(GgmlType::Q6_K, 4096, 14336, 8, 4),
        ];
        assert_eq!(names(&layer, planes), ["planes_main", "lanes64", "lanes128", "main", "planes_main", "lanes64"]);
        let plans = pass_plans(&layer, planes).unwrap();
        assert_eq!(plans[0][0].workgroups, [4, 1, 1]);
        assert_eq!(plans[4][0].workgroups, [14, 1, 1]);
        assert_eq!(scratch_bytes_for(&layer[4], planes), scratch_bytes_for(&layer[5], planes));
        assert_eq!(storage_layout_for(KernelId::SwiGlu, planes), (3, 2));
        assert_eq!(storage_layout_for(KernelId::AddRmsNorm, planes), (6, 3));
        // Without the variant: plain plans, every matvec on its own.
        assert_eq!(names(&layer, Variants::default()), ["row_slices", "lanes64", "lanes128", "main", "main", "lanes64"]);
        // The row rewritten in between, or attention / argmax (scratch users) before the reader:
        // the norm keeps `row_slices` and the matvec quantizes.
        let add = Op::Add { a: BufferId(6), b: BufferId(4), p: ElementwiseParams { n: 4096 } };
        let pass = [norm(1, 6), add, matvec(GgmlType::Q4_K, 28672, 4096, 6, 7)];
        assert_eq!(names(&pass, planes), ["row_slices", "main", "quantize+main"]);
        let argmax = Op::Argmax { x: BufferId(11), out: BufferId(12), p: crate::kernels::ArgmaxParams { n: 5000, offset: 0 } };
        let pass = [norm(1, 6), argmax.clone(), matvec(GgmlType::Q4_K, 28672, 4096, 6, 7), argmax, matvec(GgmlType::Q4_K, 28672, 4096, 6, 7)];
        assert_eq!(names(&pass, planes), ["row_slices", "partial+finish", "quantize+main", "partial+finish", "quantize+main"]);
        // Small matvecs (below PLANES_MIN_WEIGHTS) read planes only where a producer or an
        // earlier matvec left their row there; on any other row they keep the f32 kernel.
        let small_down = Op::SwiGlu { gate_up: BufferId(7), out: BufferId(8), p: SwiGluParams { n_tokens: 1, width: 4864 } };
        let pass = [small_down, matvec(GgmlType::Q4_K, 896, 4864, 8, 4), matvec(GgmlType::Q6_K, 896, 4864, 9, 4)];
        assert_eq!(names(&pass, planes), ["planes_main", "lanes128", "f32_lanes128"]);
        let pass = [norm(1, 6), matvec(GgmlType::Q6_K, 1024, 4096, 9, 10), matvec(GgmlType::Q6_K, 1024, 4096, 6, 10)];
        assert_eq!(names(&pass, planes), ["planes_main", "f32_lanes128", "lanes128"]);
        // Decode attention (RopeAttention, head_dim 128) writes the planes of its output for the
        // o projection: `wide_planes` with one split, `combine_planes` after `wide` with several;
        // without a planes reader next it keeps `wide` / `combine` and the scratch is spent.
        let attention = |kv_splits: u32| Op::RopeAttention {
            qkv: BufferId(20),
            table: BufferId(21),
            q_norm: None,
            k_norm: None,
            k_cache: BufferId(22),
            v_cache: BufferId(23),
            out: BufferId(24),
            p: crate::kernels::RopeAttentionParams {
                n_tokens: 1,
                n_heads: 32,
                n_kv_heads: 8,
                head_dim: 128,
                pos_offset: 100,
                scale: 0.1,
                kv_splits,
                qk_norm: 0,
                eps: 1e-5,
                interleaved: 0,
                _pad: [0; 2],
            },
        };
        let o_proj = matvec(GgmlType::Q4_K, 4096, 4096, 24, 25);
        assert_eq!(names(&[attention(1), o_proj.clone()], planes), ["wide_planes", "lanes64"]);
        assert_eq!(names(&[attention(2), o_proj.clone()], planes), ["wide+combine_planes", "lanes64"]);
        assert_eq!(names(&[attention(2), o_proj.clone()], Variants::default()), ["wide+combine", "lanes64"]);
        let pass = [norm(1, 6), attention(2), matvec(GgmlType::Q4_K, 28672, 4096, 6, 7)];
        assert_eq!(names(&pass, planes), ["row_slices", "wide+combine", "quantize+main"]);
        assert!(scratch_bytes_for(&attention(2), planes) >= planes_bytes(4096) + 32 * 2 * 130 * 4);
        // Prefill norms (several rows) and a matvec on another row or buffer: no planes from the norm.
        let pass = [norm(3, 6), matvec(GgmlType::Q4_K, 28672, 4096, 6, 7)];
        assert_eq!(names(&pass, planes), ["main", "quantize+main"]);
        let pass = [norm(1, 6), matvec(GgmlType::Q4_K, 28672, 4096, 9, 7)];
        assert_eq!(names(&pass, planes), ["row_slices", "quantize+main"]);
    }

    #[test]
    fn pair_matvec_lanes_by_shape() {
        use crate::quant::GgmlType::*;
        // (rows per workgroup, entry name)
        let pick = |format, n: u64, k: u64| {
            let (rows, entry) = matvec_rows_per_workgroup(format, n, k);
            (rows, entry_points(KernelId::MatVec(format))[entry])
        };
        // Qwen2.5-0.5B (28 blocks a row): the Q8_0 output head 151936 x 896 takes 8 threads a
        // pair, gate|up 9728 x 896 16, q|k / o / v 32 (not 128: capped at the blocks);
        // Q4_K / Q6_K never go below 32.
        assert_eq!(pick(Q8_0, 151936, 896), (32, "lanes8"));
        assert_eq!(pick(Q5_0, 9728, 896), (16, "lanes16"));
        assert_eq!(pick(Q5_0, 1024, 896), (8, "main"));
        assert_eq!(pick(Q8_0, 128, 896), (8, "main"));
        assert_eq!(pick(Q5_0, 20003, 512), (32, "lanes8"));
        assert_eq!(pick(Q5_0, 4000, 512), (16, "lanes16"));
        // 7 blocks a row: 32 threads a pair by the workgroup count, capped at 8.
        assert_eq!(pick(Q8_0, 40000, 224), (32, "lanes8"));
        // Long rows keep 32 (an 8B-sized Q8_0 matrix, 128 blocks a row).
        assert_eq!(pick(Q8_0, 28672, 4096), (8, "main"));
        assert_eq!(pick(Q6_K, 128256, 4096), (8, "main"));
        assert_eq!(pick(Q4_K, 4096, 14336), (4, "lanes64"));
    }

    #[test]
    fn attention_plans() {
        use crate::device::BufferId;
        use crate::kernels::AttentionParams;
        let op = |n_tokens, head_dim, kv_splits| Op::Attention {
            q: BufferId(0),
            k_cache: BufferId(1),
            v_cache: BufferId(2),
            out: BufferId(3),
            p: AttentionParams { n_tokens, n_heads: 14, n_kv_heads: 2, head_dim, pos_offset: 0, scale: 1.0, kv_splits },
        };
        let entries = |o: &Op| plan(o).expect("plan").iter().map(|d| d.entry).collect::<Vec<_>>();
        // Decode with head_dim % 4 == 0: AttentionDecode's `wide` for powers of two from 16,
        // else its `decode` (+ its `combine` with splits); other decode shapes attention.wgsl's
        // `decode` + `combine`; prefill up to head_dim 128: `prefill` (+ `combine` with splits).
        assert_eq!(op(1, 64, 3).kernel_id(), KernelId::AttentionDecode);
        assert_eq!(entries(&op(1, 64, 3)), [2, 1]);
        assert_eq!(entries(&op(1, 64, 1)), [2]);
        assert_eq!(entries(&op(1, 16, 1)), [2]);
        assert_eq!(entries(&op(1, 96, 2)), [0, 1]);
        assert_eq!(entries(&op(1, 8, 1)), [0]);
        assert_eq!(op(1, 18, 3).kernel_id(), KernelId::Attention);
        assert_eq!(entries(&op(1, 18, 3)), [2, 1]);
        assert_eq!(entries(&op(512, 64, 1)), [3]);
        assert_eq!(entries(&op(512, 128, 2)), [3, 1]);
        assert_eq!(entries(&op(512, 256, 2)), [0, 1]);
        // 512 tokens x 7 heads per kv head in 16-row workgroups.
        assert_eq!(plan(&op(512, 64, 2)).expect("plan")[0].workgroups, [2 * 224, 2, 1]);
        // With the workgroup memory for it, `prefill_wide` (64-row workgroups) where head_dim is a
        // multiple of 4 up to 128; the rest as before; decode unchanged.
        let wide = Variants { wide_attention: true, ..Default::default() };
        let wide_plan = |o: &Op| plan_for(o, wide).expect("plan");
        let wide_entries = |o: &Op| wide_plan(o).iter().map(|d| d.entry).collect::<Vec<_>>();
        assert_eq!(entry_points_for(KernelId::Attention, wide)[4], "prefill_wide");
        assert_eq!(wide_entries(&op(512, 64, 2)), [4, 1]);
        assert_eq!(wide_entries(&op(512, 128, 1)), [4]);
        assert_eq!(wide_entries(&op(33, 36, 1)), [4]);
        assert_eq!(wide_entries(&op(33, 34, 1)), [3]);
        assert_eq!(wide_entries(&op(33, 132, 2)), [0, 1]);
        assert_eq!(wide_entries(&op(1, 64, 3)), [2, 1]);
        assert_eq!(wide_plan(&op(512, 64, 2))[0].workgroups, [2 * 56, 2, 1]);
    }

    #[test]
    fn includes_are_expanded_once_and_mapped() {
        let src = kernel_source(KernelId::MatVec(WeightFormat::Q4_K)).expect("source");
        assert_eq!(src.source.matches("struct Dq8").count(), 1);
        let line = src.source.lines().position(|l| l.contains("fn k_scale_min")).expect("helper") + 1;
        assert!(src.origin(line).starts_with("common/k_scales.wgsl:"), "{}", src.origin(line));
        let missing = preprocess::preprocess("x.wgsl", &|p| (p == "x.wgsl").then_some("#include \"nope.wgsl\"\n"));
        assert!(missing.unwrap_err().contains("included from x.wgsl:1"));
    }
}
