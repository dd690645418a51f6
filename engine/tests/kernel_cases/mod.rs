//! Kernel parity cases shared by every device that runs the WGSL kernels (`wgpu_kernels.rs` for
//! `WgpuDevice`, `sim/tests/kernels.rs` for the GPU simulator): each case runs one op on the
//! device under test and on the `RefDevice` oracle, on seeded random inputs (llama.cpp
//! test-backend-ops style), and compares the outputs by normalized mean squared error with a
//! per-kernel bound (Argmax exactly). Shapes include the awkward ones: odd n, k not a multiple of
//! 256 where the format allows, m = 1 / 7 / 33, KV lengths 1 / 17 / 300, GQA groups 1 / 2 / 7.
//! Run with `--nocapture` to see the NMSE of every case.
//!
//! The cases are `async` (reads go through `Device::read`'s future): native tests drive them with
//! `pollster::block_on`, the browser test (`web_kernel.rs`) awaits them, since blocking the
//! page's thread would stop WebGPU's map callbacks from ever running.

#![allow(dead_code)]

/// One progress line (the NMSE of a case): stderr natively, the browser console under
/// wasm-bindgen-test (printed with `--nocapture` or on failure).
#[cfg(not(target_arch = "wasm32"))]
macro_rules! note {
    ($($t:tt)*) => { eprintln!($($t)*) };
}
#[cfg(target_arch = "wasm32")]
macro_rules! note {
    ($($t:tt)*) => { wasm_bindgen_test::console_log!($($t)*) };
}

use engine::device::{read_f32, read_u32, BufferId, BufferKind, Device, RefDevice};
use engine::kernels::reference::rope_table;
use engine::kernels::{
    attention_splits, ArgmaxParams, AttentionParams, ElementwiseParams, EmbedParams, MatMulParams, Op, RmsNormParams,
    RopeKvWriteParams, SwiGluParams, TopKParams, WeightBuf, WeightFormat,
};
use engine::quant::{self, GgmlType};
use half::f16;

/// splitmix64: a tiny seeded generator, so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn floats(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % n as u64) as u32
    }
}

/// The same buffers on the device under test and on the oracle.
pub struct Pair {
    pub gpu: Box<dyn Device>,
    pub cpu: RefDevice,
}

impl Pair {
    pub fn new(gpu: Box<dyn Device>) -> Self {
        note!("device under test: {}", gpu.info().name);
        Self { gpu, cpu: RefDevice::new() }
    }

    fn bytes(&mut self, data: &[u8]) -> BufferId {
        let a = self.gpu.alloc(BufferKind::Activations, "test", data.len() as u64).expect("gpu alloc");
        let b = self.cpu.alloc(BufferKind::Activations, "test", data.len() as u64).expect("cpu alloc");
        assert_eq!(a, b, "both devices number buffers in allocation order");
        self.gpu.write(a, 0, data).expect("gpu write");
        self.cpu.write(b, 0, data).expect("cpu write");
        a
    }

    fn f32s(&mut self, data: &[f32]) -> BufferId {
        self.bytes(bytemuck::cast_slice(data))
    }

    fn zeros(&mut self, elems: usize) -> BufferId {
        self.bytes(&vec![0u8; elems * 4])
    }

    fn run(&mut self, op: Op) {
        self.cpu.run(std::slice::from_ref(&op)).expect("reference run");
        self.gpu.run(std::slice::from_ref(&op)).expect("gpu run");
    }

    async fn read(&mut self, buf: BufferId, elems: usize) -> (Vec<f32>, Vec<f32>) {
        let gpu = read_f32(self.gpu.as_mut(), buf, 0, elems).await.expect("gpu read");
        let cpu = read_f32(&mut self.cpu, buf, 0, elems).await.expect("cpu read");
        (gpu, cpu)
    }
}

/// Normalized mean squared error of `got` against `want`.
fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

async fn check(label: &str, pair: &mut Pair, buf: BufferId, elems: usize, max_nmse: f64) {
    let (gpu, cpu) = pair.read(buf, elems).await;
    assert!(gpu.iter().all(|v| v.is_finite()), "{label}: non-finite GPU output");
    let e = nmse(&gpu, &cpu);
    note!("{label:<58} nmse {e:.3e}");
    assert!(e <= max_nmse, "{label}: NMSE {e:.3e} > {max_nmse:.0e}");
}

// Every kernel dequantizes exactly as the reference, so only f32 summation order differs.
const MAX_NMSE_MATMUL: f64 = 1e-9;
const MAX_NMSE_ELEMENTWISE: f64 = 1e-12;
const MAX_NMSE_NORM: f64 = 1e-10;
const MAX_NMSE_ATTENTION: f64 = 1e-9;

/// A random `[rows, cols]` weight in its packed device layout. Quantized formats get random
/// blocks with their f16 scale fields set to small finite values (every bit pattern of the other
/// fields is a valid block).
fn random_weight(rng: &mut Rng, format: WeightFormat, rows: usize, cols: usize) -> Vec<u8> {
    match format {
        GgmlType::F32 => quant::repack(format, bytemuck::cast_slice(&rng.floats(rows * cols, 1.0))).expect("repack"),
        GgmlType::F16 => {
            let halves: Vec<u16> = (0..rows * cols).map(|_| f16::from_f32(rng.unit()).to_bits()).collect();
            quant::repack(format, bytemuck::cast_slice(&halves)).expect("repack")
        }
        _ => {
            let n_blocks = rows * cols / format.block_elems();
            let mut disk: Vec<u8> = (0..n_blocks * format.block_bytes()).map(|_| rng.next() as u8).collect();
            for block in disk.chunks_exact_mut(format.block_bytes()) {
                for field in format.fields().iter().filter(|f| f.name == "d" || f.name.starts_with("dm")) {
                    for half in block[field.offset..field.offset + field.len.min(4)].chunks_exact_mut(2) {
                        half.copy_from_slice(&f16::from_f32(rng.unit() * 0.05).to_le_bytes());
                    }
                }
            }
            quant::repack(format, &disk).expect("repack")
        }
    }
}

/// `k` for a format: odd where any k works, a non-multiple of 256 where 32-blocks allow it.
fn awkward_k(format: WeightFormat) -> usize {
    match format.block_elems() {
        1 => 45,
        32 => 96,
        _ => 512,
    }
}

const FORMATS: [WeightFormat; 10] = {
    use GgmlType::*;
    [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K]
};

pub async fn embed_every_format(mut pair: Pair) {
    let mut rng = Rng(1);
    for format in FORMATS {
        let (rows, hidden) = (37usize, awkward_k(format));
        let packed = random_weight(&mut rng, format, rows, hidden);
        let table = WeightBuf { buf: pair.bytes(&packed), format, rows: rows as u32, cols: hidden as u32 };
        let ids: Vec<u32> = (0..7).map(|_| rng.below(rows as u32)).chain([0, rows as u32 - 1]).collect();
        let ids_buf = pair.bytes(bytemuck::cast_slice(&ids));
        let out = pair.zeros(ids.len() * hidden);
        let p = EmbedParams { n_tokens: ids.len() as u32, hidden: hidden as u32, first_row: 0, n_rows: rows as u32 };
        pair.run(Op::Embed { table, ids: ids_buf, out, p });
        check(&format!("Embed({format}) rows {rows} hidden {hidden}"), &mut pair, out, ids.len() * hidden, 0.0).await;

        // A part of a row-split table: rows 10..27 only; other tokens keep what `out` held.
        let part_rows = 17usize;
        let part = random_weight(&mut rng, format, part_rows, hidden);
        let table = WeightBuf { buf: pair.bytes(&part), format, rows: part_rows as u32, cols: hidden as u32 };
        let ids: Vec<u32> = vec![3, 10, 26, 27, 15, 40];
        let ids_buf = pair.bytes(bytemuck::cast_slice(&ids));
        let out = pair.f32s(&rng.floats(ids.len() * hidden, 1.0));
        let p = EmbedParams { n_tokens: ids.len() as u32, hidden: hidden as u32, first_row: 10, n_rows: part_rows as u32 };
        pair.run(Op::Embed { table, ids: ids_buf, out, p });
        check(&format!("Embed({format}) table part 10..27"), &mut pair, out, ids.len() * hidden, 0.0).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn matmul_case(pair: &mut Pair, rng: &mut Rng, format: WeightFormat, m: u32, n: u32, k: u32, bias: bool, split: bool) {
    let packed = random_weight(rng, format, n as usize, k as usize);
    let w = WeightBuf { buf: pair.bytes(&packed), format, rows: n, cols: k };
    let x_row = 2;
    let x = pair.f32s(&rng.floats(((x_row + m) * k) as usize, 1.0));
    let bias = bias.then(|| pair.f32s(&rng.floats(n as usize, 1.0)));
    // `split`: write columns 5..5+n of a wider output, as one part of a row-split weight does.
    let (out_stride, out_col) = if split { (n + 9, 5) } else { (n, 0) };
    let out = pair.f32s(&rng.floats((m * out_stride) as usize, 1.0));
    let p = MatMulParams { m, n, k, x_row, has_bias: bias.is_some() as u32, out_stride, out_col };
    let op = Op::MatMul { w, x, bias, out, p };
    let kind = format!("{:?}", op.kernel_id());
    pair.run(op);
    let label = format!("{kind} m {m} n {n} k {k}{}{}", if p.has_bias != 0 { " +bias" } else { "" }, if split { " cols 5.." } else { "" });
    check(&label, pair, out, (m * out_stride) as usize, MAX_NMSE_MATMUL).await;
}

pub async fn matvec_every_format(mut pair: Pair) {
    let mut rng = Rng(2);
    for format in FORMATS {
        let k = awkward_k(format) as u32;
        matmul_case(&mut pair, &mut rng, format, 1, 37, k, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 131, k, true, true).await;
    }
    // The pair matvecs (Q4_K / Q6_K: 16-byte slots, 8 per super-block, per thread; Q8_0 / Q5_0:
    // whole blocks per thread) give each pair of rows 128 threads below 4093 rows, 64 below 8185
    // and 32 from there (engine::shaders::matvec_rows_per_workgroup): rows of few units (threads
    // idle) and of units not a multiple of the lanes; 1..7 rows left in the last workgroup, a pair
    // cut in half, for each of the three entry points.
    matmul_case(&mut pair, &mut rng, GgmlType::Q4_K, 1, 64, 2048, false, false).await;
    for format in [GgmlType::Q4_K, GgmlType::Q6_K] {
        matmul_case(&mut pair, &mut rng, format, 1, 38, 768, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 437, 4096, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 5, 4864, false, true).await;
        matmul_case(&mut pair, &mut rng, format, 1, 1, 256, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 4099, 1280, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 8195, 512, false, false).await;
    }
    // Matrices of at least 2^24 weights, where native devices quantize the activations into
    // planes (engine::shaders PLANES_MIN_WEIGHTS): 128, 64 and 32 threads per pair of rows.
    for format in [GgmlType::Q4_K, GgmlType::Q6_K] {
        matmul_case(&mut pair, &mut rng, format, 1, 1029, 16384, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 4097, 4096, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 16391, 1024, false, true).await;
    }
    for format in [GgmlType::Q8_0, GgmlType::Q5_0] {
        matmul_case(&mut pair, &mut rng, format, 1, 38, 896, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 2347, 896, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 437, 4864, false, true).await;
        matmul_case(&mut pair, &mut rng, format, 1, 5, 4864, false, true).await;
        matmul_case(&mut pair, &mut rng, format, 1, 1, 32, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 4099, 2080, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 8195, 96, false, false).await;
        // Short rows (engine::shaders::matvec_rows_per_workgroup): 8 threads a pair (33001 x 28
        // blocks, 20003 x 16; 40000 x 7, 8195 x 3 and 1 x 1 capped at 8), 16 (9731 x 28), 32
        // (2347 and 38 x 28, capped from 128).
        matmul_case(&mut pair, &mut rng, format, 1, 9731, 896, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 33001, 896, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 20003, 512, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 1, 40000, 224, false, false).await;
    }
    matmul_case(&mut pair, &mut rng, GgmlType::F16, 1, 7, 1001, true, false).await;
}

/// Decode passes where the op producing a planes matvec's activation row also writes its planes
/// (add_rms_norm.wgsl / swiglu.wgsl `planes_main`, chosen by engine::shaders::pass_plans on
/// devices with planes matvecs) and a second matvec on the same row reuses them; then passes
/// where something in between rules that out (the row rewritten, attention using the scratch).
/// Devices without planes run the same passes on their plain kernels.
pub async fn planes_producer_passes(mut pair: Pair) {
    let mut rng = Rng(11);
    let weight_of = |pair: &mut Pair, rng: &mut Rng, format: WeightFormat, n: u32, k: u32| {
        let packed = random_weight(rng, format, n as usize, k as usize);
        WeightBuf { buf: pair.bytes(&packed), format, rows: n, cols: k }
    };
    let matvec = |w: WeightBuf, x: BufferId, out: BufferId| Op::MatMul {
        w,
        x,
        bias: None,
        out,
        p: MatMulParams { m: 1, n: w.rows, k: w.cols, x_row: 0, has_bias: 0, out_stride: w.rows, out_col: 0 },
    };
    // AddRmsNorm (4096 columns) -> Q4_K and Q6_K matvecs of >= 2^24 weights on its output.
    let k = 4096u32;
    let residual = pair.f32s(&rng.floats(k as usize, 2.0));
    let delta = pair.f32s(&rng.floats(k as usize, 2.0));
    let norm_w = pair.f32s(&rng.floats(k as usize, 1.0));
    let h = pair.zeros(k as usize);
    let residual_out = pair.zeros(k as usize);
    let w_a = weight_of(&mut pair, &mut rng, GgmlType::Q4_K, 4097, k);
    let w_b = weight_of(&mut pair, &mut rng, GgmlType::Q6_K, 4099, k);
    let (y_a, y_b) = (pair.zeros(4097), pair.zeros(4099));
    let norm = Op::AddRmsNorm { residual, residual_out, x: delta, weight: norm_w, out: h, p: RmsNormParams { n_rows: 1, n_cols: k, eps: 1e-6 } };
    let ops = [norm.clone(), matvec(w_a, h, y_a), matvec(w_b, h, y_b)];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("AddRmsNorm -> planes: residual_out", &mut pair, residual_out, k as usize, 0.0).await;
    check("AddRmsNorm -> planes: out", &mut pair, h, k as usize, MAX_NMSE_NORM).await;
    check("AddRmsNorm -> MatVec(Q4_K) 4097x4096", &mut pair, y_a, 4097, MAX_NMSE_MATMUL).await;
    check("... -> MatVec(Q6_K) 4099x4096 on the same planes", &mut pair, y_b, 4099, MAX_NMSE_MATMUL).await;

    // SwiGlu (one token, 16384 wide: 16 workgroups of `planes_main`) -> Q6_K / Q4_K down projections.
    let width = 16384u32;
    let gate_up = pair.f32s(&rng.floats(2 * width as usize, 6.0));
    let act = pair.zeros(width as usize);
    let w_c = weight_of(&mut pair, &mut rng, GgmlType::Q6_K, 1029, width);
    let y_c = pair.zeros(1029);
    let ops = [Op::SwiGlu { gate_up, out: act, p: SwiGluParams { n_tokens: 1, width } }, matvec(w_c, act, y_c)];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("SwiGlu -> planes: out", &mut pair, act, width as usize, MAX_NMSE_ELEMENTWISE).await;
    check("SwiGlu -> MatVec(Q6_K) 1029x16384", &mut pair, y_c, 1029, MAX_NMSE_MATMUL).await;

    // Matvecs below PLANES_MIN_WEIGHTS on a row held as planes read them (the 8B's v projection
    // after q|k; a 0.5B-sized down projection after its SwiGlu); on another row, the f32 kernel.
    let y_small = pair.zeros(1024);
    let w_small = weight_of(&mut pair, &mut rng, GgmlType::Q6_K, 1024, k);
    let ops = [norm.clone(), matvec(w_a, h, y_a), matvec(w_small, h, y_small)];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("AddRmsNorm -> MatVec(Q4_K) -> MatVec(Q6_K) 1024x4096 on its planes", &mut pair, y_small, 1024, MAX_NMSE_MATMUL).await;
    let width = 4864u32;
    let gate_up = pair.f32s(&rng.floats(2 * width as usize, 6.0));
    let act = pair.zeros(width as usize);
    let w_d = weight_of(&mut pair, &mut rng, GgmlType::Q4_K, 896, width);
    let w_e = weight_of(&mut pair, &mut rng, GgmlType::Q6_K, 1024, k);
    let (y_d, y_e) = (pair.zeros(896), pair.zeros(1024));
    let ops = [Op::SwiGlu { gate_up, out: act, p: SwiGluParams { n_tokens: 1, width } }, matvec(w_d, act, y_d), matvec(w_e, residual, y_e)];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("SwiGlu -> MatVec(Q4_K) 896x4864 on its planes", &mut pair, y_d, 896, MAX_NMSE_MATMUL).await;
    check("... MatVec(Q6_K) 1024x4096 on another row (f32)", &mut pair, y_e, 1024, MAX_NMSE_MATMUL).await;

    // Decode attention (RopeAttention, 32 heads x 128) -> the o projection (Q4_K 4097x4096) on its
    // planes: one split (`wide_planes`) and three (`wide` + `combine_planes`).
    for (pos, kv_splits) in [(40u32, 1u32), (150, 3)] {
        let (n_heads, n_kv_heads, head_dim) = (32u32, 8u32, 128u32);
        let ctx = pos as usize + 1;
        let table = pair.f32s(&rope_table(500_000.0, head_dim as usize, ctx));
        let qkv = pair.f32s(&rng.floats(((n_heads + 2 * n_kv_heads) * head_dim) as usize, 3.0));
        let cache_len = ctx * (n_kv_heads * head_dim) as usize;
        let k_cache = pair.f32s(&rng.floats(cache_len, 1.0));
        let v_cache = pair.f32s(&rng.floats(cache_len, 1.0));
        let att = pair.zeros((n_heads * head_dim) as usize);
        let p = engine::kernels::RopeAttentionParams {
            n_tokens: 1,
            n_heads,
            n_kv_heads,
            head_dim,
            pos_offset: pos,
            scale: 1.0 / (head_dim as f32).sqrt(),
            kv_splits,
            qk_norm: 0,
            eps: 1e-5,
            interleaved: 1,
            _pad: [0; 2],
        };
        let ops = [Op::RopeAttention { qkv, table, q_norm: None, k_norm: None, k_cache, v_cache, out: att, p }, matvec(w_a, att, y_a)];
        pair.cpu.run(&ops).expect("reference");
        pair.gpu.run(&ops).expect("gpu");
        check(&format!("RopeAttention ({kv_splits} splits) -> planes: out"), &mut pair, att, k as usize, MAX_NMSE_ATTENTION).await;
        check(&format!("RopeAttention ({kv_splits} splits) -> MatVec(Q4_K) 4097x4096"), &mut pair, y_a, 4097, MAX_NMSE_MATMUL).await;
    }

    // The norm's output rewritten before the matvec (Add), and attention (which uses the scratch)
    // between two matvecs on one row: each matvec must quantize what it reads.
    let q = pair.f32s(&rng.floats(256, 1.0));
    let kc = pair.f32s(&rng.floats(4 * 128, 1.0));
    let vc = pair.f32s(&rng.floats(4 * 128, 1.0));
    let att = pair.zeros(256);
    let ap = AttentionParams { n_tokens: 1, n_heads: 2, n_kv_heads: 1, head_dim: 128, pos_offset: 3, scale: 0.1, kv_splits: 2 };
    let ops = [
        norm,
        Op::Add { a: h, b: delta, p: ElementwiseParams { n: k } },
        matvec(w_a, h, y_a),
        Op::Attention { q, k_cache: kc, v_cache: vc, out: att, p: ap },
        matvec(w_b, h, y_b),
    ];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("AddRmsNorm, Add -> MatVec(Q4_K)", &mut pair, y_a, 4097, MAX_NMSE_MATMUL).await;
    check("... Attention -> MatVec(Q6_K)", &mut pair, y_b, 4099, MAX_NMSE_MATMUL).await;
    check("... Attention out", &mut pair, att, 256, MAX_NMSE_ATTENTION).await;
}

pub async fn matmul_every_format(mut pair: Pair) {
    let mut rng = Rng(3);
    for format in FORMATS {
        let k = awkward_k(format) as u32;
        matmul_case(&mut pair, &mut rng, format, 7, 37, k, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 33, 19, k, true, true).await;
        // Several 64 x 64 tiles in both directions, the last ones partial.
        matmul_case(&mut pair, &mut rng, format, 70, 131, k, true, false).await;
    }
    // Enough tiles for the tensor-core variant's `rows128` entry (128 activation rows per
    // workgroup from 256 workgroups, engine::shaders::plan_for), its last row tile 2 rows high;
    // elsewhere more 64 x 64 tiles.
    matmul_case(&mut pair, &mut rng, GgmlType::Q4_K, 130, 8200, 256, true, false).await;
    matmul_case(&mut pair, &mut rng, GgmlType::F32, 129, 8195, 45, false, true).await;
    // ... and its `wide` entry (128 x 128 tiles from 512 workgroups), the last tiles partial.
    matmul_case(&mut pair, &mut rng, GgmlType::F32, 129, 32770, 40, true, true).await;
}

/// The MatMul kernels' tile shapes for every format: several 64 x 64 tiles (partial in both
/// directions), and shapes with enough workgroups for the tensor-core variant's `rows128` (64 x 128
/// tiles from 256 workgroups) and `wide` (128 x 128 from 512) entry points
/// (`engine::shaders::plan_for`), their last tiles partial in both directions and k not a
/// multiple of the 32-wide K step where the format allows. Costly on slow devices: the simulator
/// runs it for the tensor-core kernels (sim/tests/kernels.rs).
pub async fn matmul_tile_shapes_every_format(mut pair: Pair) {
    let mut rng = Rng(9);
    for format in FORMATS {
        let k = awkward_k(format) as u32;
        matmul_case(&mut pair, &mut rng, format, 7, 37, k, false, false).await;
        matmul_case(&mut pair, &mut rng, format, 70, 131, k, true, true).await;
        // Few k (the shapes are wide): a K step and a partial one for the unquantized formats,
        // two blocks or one super-block otherwise.
        let small_k = match format.block_elems() {
            1 => 40,
            32 => 64,
            _ => 256,
        };
        matmul_case(&mut pair, &mut rng, format, 130, 8133, small_k, true, false).await;
        matmul_case(&mut pair, &mut rng, format, 129, 32650, small_k, false, true).await;
    }
}

pub async fn norms(mut pair: Pair) {
    let mut rng = Rng(4);
    // One row of a multiple of 4 columns: `row_slices`, 1024 columns per workgroup (896: one,
    // 4096: four, 4100: a fifth with one live thread, 9216: three loop steps per thread).
    for (rows, cols) in [(1u32, 64u32), (5, 67), (3, 576), (40, 32), (2, 4099), (1, 896), (1, 4096), (1, 4100), (1, 9216), (1, 67)] {
        let x = pair.f32s(&rng.floats((rows * cols) as usize, 2.0));
        let w = pair.f32s(&rng.floats(cols as usize, 1.0));
        let out = pair.zeros((rows * cols) as usize);
        let p = RmsNormParams { n_rows: rows, n_cols: cols, eps: 1e-6 };
        pair.run(Op::RmsNorm { x, weight: w, out, p });
        check(&format!("RmsNorm rows {rows} cols {cols}"), &mut pair, out, (rows * cols) as usize, MAX_NMSE_NORM).await;

        let residual = pair.f32s(&rng.floats((rows * cols) as usize, 2.0));
        let residual_out = pair.zeros((rows * cols) as usize);
        let out = pair.zeros((rows * cols) as usize);
        pair.run(Op::AddRmsNorm { residual, residual_out, x, weight: w, out, p });
        check(&format!("AddRmsNorm rows {rows} cols {cols} (out)"), &mut pair, out, (rows * cols) as usize, MAX_NMSE_NORM).await;
        check(&format!("AddRmsNorm rows {rows} cols {cols} (residual_out)"), &mut pair, residual_out, (rows * cols) as usize, 0.0).await;
        check(&format!("AddRmsNorm rows {rows} cols {cols} (residual kept)"), &mut pair, residual, (rows * cols) as usize, 0.0).await;
        // In place would race between the workgroups of a row: a typed error, nothing runs.
        let in_place = Op::AddRmsNorm { residual, residual_out: residual, x, weight: w, out, p };
        assert!(pair.gpu.run(&[in_place]).is_err(), "AddRmsNorm with residual_out == residual must be refused");
    }
}

/// The fused q|k|v split: RoPE in both pairings, with and without per-head q/k norms, GQA and
/// MHA, one and several tokens, head sizes 16 / 64 / 128 (more than the 64 threads of a
/// workgroup). The caches start with junk rows that must survive.
pub async fn rope_kv_write(mut pair: Pair) {
    let mut rng = Rng(5);
    for interleaved in [false, true] {
        for qk_norm in [false, true] {
            for (n_tokens, n_heads, n_kv_heads, head_dim, pos_offset) in
                [(1u32, 9u32, 3u32, 64u32, 100u32), (7, 5, 5, 16, 4), (33, 4, 2, 128, 0), (2, 14, 2, 64, 157)]
            {
                let ctx = 160usize;
                let table = rope_table(1_000_000.0, head_dim as usize, ctx);
                let table = pair.f32s(&table);
                let width = ((n_heads + 2 * n_kv_heads) * head_dim) as usize;
                let qkv = pair.f32s(&rng.floats(n_tokens as usize * width, 3.0));
                let norms = if qk_norm {
                    let qn = pair.f32s(&rng.floats(head_dim as usize, 2.0));
                    let kn = pair.f32s(&rng.floats(head_dim as usize, 2.0));
                    (Some(qn), Some(kn))
                } else {
                    (None, None)
                };
                let q_len = (n_tokens * n_heads * head_dim) as usize;
                let cache_len = ctx * (n_kv_heads * head_dim) as usize;
                let q_out = pair.zeros(q_len);
                let k_cache = pair.f32s(&rng.floats(cache_len, 1.0));
                let v_cache = pair.f32s(&rng.floats(cache_len, 1.0));
                let p = RopeKvWriteParams {
                    n_tokens,
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    pos_offset,
                    qk_norm: qk_norm as u32,
                    eps: 1e-6,
                    _pad: 0,
                };
                let op = Op::RopeKvWrite { qkv, table, q_norm: norms.0, k_norm: norms.1, q_out, k_cache, v_cache, interleaved, p };
                let label = format!(
                    "{:?} norm {} tokens {n_tokens} heads {n_heads}/{n_kv_heads} dim {head_dim} pos {pos_offset}",
                    op.kernel_id(),
                    qk_norm as u8
                );
                pair.run(op);
                let bound = if qk_norm { MAX_NMSE_NORM } else { MAX_NMSE_ELEMENTWISE };
                check(&format!("{label} q"), &mut pair, q_out, q_len, bound).await;
                check(&format!("{label} k_cache"), &mut pair, k_cache, cache_len, bound).await;
                check(&format!("{label} v_cache"), &mut pair, v_cache, cache_len, 0.0).await;
            }
        }
    }
}

/// RoPE + KV write + decode attention in one op (RopeAttention) against the reference's
/// RopeKvWrite then Attention: both pairings, with and without q/k norms, GQA / MHA, one split
/// and several, `decode` (head_dim 96) and `wide` (16, 64, 128, 256) entries; the cache rows
/// around the new one must survive.
pub async fn rope_attention_decode(mut pair: Pair) {
    use engine::kernels::{attention_splits_for, RopeAttentionParams};
    let mut rng = Rng(15);
    for interleaved in [false, true] {
        for qk_norm in [false, true] {
            for (n_heads, n_kv_heads, head_dim, pos, splits) in [
                (14u32, 2u32, 64u32, 0u32, None),
                (14, 2, 64, 99, None),
                (8, 2, 128, 299, None),
                (8, 2, 128, 40, Some(3)),
                (4, 4, 96, 70, Some(2)),
                (6, 2, 16, 600, None),
                (2, 1, 256, 40, Some(1)),
            ] {
                let ctx = pos as usize + 3;
                let table = pair.f32s(&rope_table(1_000_000.0, head_dim as usize, ctx));
                let width = ((n_heads + 2 * n_kv_heads) * head_dim) as usize;
                let qkv = pair.f32s(&rng.floats(width, 3.0));
                let (q_norm, k_norm) = if qk_norm {
                    (Some(pair.f32s(&rng.floats(head_dim as usize, 2.0))), Some(pair.f32s(&rng.floats(head_dim as usize, 2.0))))
                } else {
                    (None, None)
                };
                let cache_len = ctx * (n_kv_heads * head_dim) as usize;
                let k_cache = pair.f32s(&rng.floats(cache_len, 1.0));
                let v_cache = pair.f32s(&rng.floats(cache_len, 1.0));
                let out_len = (n_heads * head_dim) as usize;
                let out = pair.zeros(out_len);
                let p = RopeAttentionParams {
                    n_tokens: 1,
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    pos_offset: pos,
                    scale: 1.0 / (head_dim as f32).sqrt(),
                    kv_splits: splits.unwrap_or_else(|| attention_splits_for(1, pos + 1)),
                    qk_norm: qk_norm as u32,
                    eps: 1e-6,
                    interleaved: interleaved as u32,
                    _pad: [0; 2],
                };
                let label = format!(
                    "RopeAttention interleaved {} norm {} heads {n_heads}/{n_kv_heads} dim {head_dim} pos {pos} splits {}",
                    interleaved as u8, qk_norm as u8, p.kv_splits
                );
                pair.run(Op::RopeAttention { qkv, table, q_norm, k_norm, k_cache, v_cache, out, p });
                check(&format!("{label} out"), &mut pair, out, out_len, MAX_NMSE_ATTENTION).await;
                let bound = if qk_norm { MAX_NMSE_NORM } else { MAX_NMSE_ELEMENTWISE };
                check(&format!("{label} k_cache"), &mut pair, k_cache, cache_len, bound).await;
                check(&format!("{label} v_cache"), &mut pair, v_cache, cache_len, 0.0).await;
            }
        }
    }
    // More than one token, or a head the decode attention does not take: refused, typed.
    let qkv = pair.f32s(&rng.floats(2 * 4 * 64, 1.0));
    let table = pair.f32s(&rope_table(10_000.0, 64, 4));
    let (k_cache, v_cache) = (pair.zeros(4 * 64), pair.zeros(4 * 64));
    let out = pair.zeros(2 * 2 * 64);
    for (n_tokens, head_dim) in [(2u32, 64u32), (1, 18)] {
        let p = RopeAttentionParams {
            n_tokens,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim,
            pos_offset: 1,
            scale: 0.125,
            kv_splits: 1,
            qk_norm: 0,
            eps: 1e-6,
            interleaved: 0,
            _pad: [0; 2],
        };
        let op = Op::RopeAttention { qkv, table, q_norm: None, k_norm: None, k_cache, v_cache, out, p };
        assert!(pair.gpu.run(&[op]).is_err(), "RopeAttention of {n_tokens} tokens, head_dim {head_dim} must be refused");
    }
}

pub async fn swiglu_add(mut pair: Pair) {
    let mut rng = Rng(6);
    for (n_tokens, width) in [(1u32, 1u32), (1, 1000), (7, 4864), (3, 70_001)] {
        let len = (n_tokens * width) as usize;
        let gate_up = pair.f32s(&rng.floats(2 * len, 6.0));
        let out = pair.zeros(len);
        pair.run(Op::SwiGlu { gate_up, out, p: SwiGluParams { n_tokens, width } });
        check(&format!("SwiGlu tokens {n_tokens} width {width}"), &mut pair, out, len, MAX_NMSE_ELEMENTWISE).await;
        let a = pair.f32s(&rng.floats(len, 2.0));
        let b = pair.f32s(&rng.floats(len, 2.0));
        pair.run(Op::Add { a, b, p: ElementwiseParams { n: len as u32 } });
        check(&format!("Add n {len}"), &mut pair, a, len, 0.0).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn attention_case(pair: &mut Pair, rng: &mut Rng, n_tokens: u32, pos_offset: u32, kv_heads: u32, group: u32, head_dim: u32, splits: Option<u32>) {
    let n_heads = kv_heads * group;
    let ctx = pos_offset + n_tokens;
    let kv_dim = kv_heads * head_dim;
    let q = pair.f32s(&rng.floats((n_tokens * n_heads * head_dim) as usize, 1.0));
    // A cache longer than the visible keys, with junk past them that must not be read.
    let cache_rows = ctx + 3;
    let k_cache = pair.f32s(&rng.floats((cache_rows * kv_dim) as usize, 1.0));
    let v_cache = pair.f32s(&rng.floats((cache_rows * kv_dim) as usize, 1.0));
    let out = pair.zeros((n_tokens * n_heads * head_dim) as usize);
    let kv_splits = splits.unwrap_or_else(|| attention_splits(ctx));
    let p = AttentionParams {
        n_tokens,
        n_heads,
        n_kv_heads: kv_heads,
        head_dim,
        pos_offset,
        // Larger than 1/sqrt(d) so softmax is peaked and cancellation errors would show.
        scale: 2.0 / (head_dim as f32).sqrt(),
        kv_splits,
    };
    pair.run(Op::Attention { q, k_cache, v_cache, out, p });
    let label = format!("Attention tokens {n_tokens} kv {ctx} heads {n_heads}/{kv_heads} dim {head_dim} splits {kv_splits}");
    check(&label, pair, out, (n_tokens * n_heads * head_dim) as usize, MAX_NMSE_ATTENTION).await;
}

pub async fn attention_decode(mut pair: Pair) {
    let mut rng = Rng(7);
    for ctx in [1u32, 17, 300] {
        for group in [1u32, 2, 7] {
            attention_case(&mut pair, &mut rng, 1, ctx - 1, 2, group, 64, None).await;
        }
    }
    // Several splits, including empty ones (span * splits > ctx), and other head sizes.
    attention_case(&mut pair, &mut rng, 1, 16, 3, 3, 64, Some(5)).await;
    attention_case(&mut pair, &mut rng, 1, 299, 1, 2, 128, Some(16)).await;
    // The decode rule: one 64-key tile per split (300 keys -> 5 splits; 4000 -> 63, the last short).
    attention_case(&mut pair, &mut rng, 1, 299, 2, 7, 64, Some(engine::kernels::attention_splits_for(1, 300))).await;
    attention_case(&mut pair, &mut rng, 1, 3999, 1, 4, 64, Some(engine::kernels::attention_splits_for(1, 4000))).await;
    attention_case(&mut pair, &mut rng, 1, 4199, 1, 2, 64, Some(engine::kernels::MAX_KV_SPLITS)).await;
    attention_case(&mut pair, &mut rng, 1, 40, 2, 7, 32, Some(3)).await;
    attention_case(&mut pair, &mut rng, 1, 9, 1, 1, 20, Some(2)).await;
    // head_dim 256 (one key subset per column in attention_decode.wgsl); 18, not a multiple of
    // 4, takes attention.wgsl's decode entry.
    attention_case(&mut pair, &mut rng, 1, 99, 1, 2, 256, None).await;
    attention_case(&mut pair, &mut rng, 1, 49, 1, 2, 18, Some(2)).await;
    // `wide` (head_dim 16..256, powers of two): ten 32-key tiles in one split (head_dim 128),
    // 256-key tiles (head_dim 16); head_dim 96 keeps `decode`.
    attention_case(&mut pair, &mut rng, 1, 299, 2, 4, 128, Some(1)).await;
    attention_case(&mut pair, &mut rng, 1, 600, 1, 2, 16, Some(2)).await;
    attention_case(&mut pair, &mut rng, 1, 70, 1, 3, 96, Some(2)).await;
}

pub async fn attention_prefill(mut pair: Pair) {
    let mut rng = Rng(8);
    attention_case(&mut pair, &mut rng, 7, 0, 2, 2, 64, None).await;
    attention_case(&mut pair, &mut rng, 7, 10, 1, 7, 64, Some(2)).await;
    attention_case(&mut pair, &mut rng, 33, 0, 3, 3, 64, None).await;
    attention_case(&mut pair, &mut rng, 33, 267, 2, 1, 128, None).await;
    attention_case(&mut pair, &mut rng, 17, 5, 2, 7, 16, Some(4)).await;
    // The tiled `prefill` entry point (head_dim <= 128): 16-row workgroups, 32-key tiles. Fewer
    // tokens than a tile, exactly one row tile / key tile, odd counts, several row tiles per token
    // span (GQA 7: qwen2.5-0.5b, 4: Llama-3-8B), a cached prefix (pos_offset > 0: chunked prefill,
    // prefix reuse), one split (writes `out` directly) and several (partials + combine).
    attention_case(&mut pair, &mut rng, 2, 0, 2, 7, 64, None).await;
    attention_case(&mut pair, &mut rng, 16, 0, 1, 1, 64, Some(1)).await;
    attention_case(&mut pair, &mut rng, 32, 0, 2, 4, 128, None).await;
    attention_case(&mut pair, &mut rng, 37, 0, 2, 7, 64, Some(1)).await;
    attention_case(&mut pair, &mut rng, 37, 300, 2, 7, 64, None).await;
    attention_case(&mut pair, &mut rng, 100, 0, 2, 4, 128, None).await;
    attention_case(&mut pair, &mut rng, 100, 61, 1, 2, 80, Some(1)).await;
    attention_case(&mut pair, &mut rng, 64, 1000, 1, 4, 128, None).await;
    attention_case(&mut pair, &mut rng, 513, 0, 2, 7, 64, None).await;
    attention_case(&mut pair, &mut rng, 513, 0, 1, 1, 96, Some(1)).await;
    // `prefill_wide` (devices with its workgroup memory; head_dim a multiple of 8 up to 128):
    // 64-row workgroups over 16-key tiles. 65 rows (a second block of one row), exactly 64,
    // head_dim 8 / 24 / 40, GQA 5 over a cached prefix with more splits than some rows have keys
    // (empty partials), three splits on the 8B's shape.
    attention_case(&mut pair, &mut rng, 65, 0, 1, 1, 8, Some(1)).await;
    attention_case(&mut pair, &mut rng, 16, 0, 1, 4, 24, None).await;
    attention_case(&mut pair, &mut rng, 3, 40, 1, 5, 40, Some(3)).await;
    attention_case(&mut pair, &mut rng, 200, 13, 2, 4, 128, Some(3)).await;
    // head_dim not a multiple of 4 / 16, and past the prefill kernel's 128 (the `partial` path).
    attention_case(&mut pair, &mut rng, 19, 7, 2, 3, 34, None).await;
    attention_case(&mut pair, &mut rng, 5, 0, 1, 2, 2, Some(1)).await;
    attention_case(&mut pair, &mut rng, 9, 4, 1, 2, 160, Some(2)).await;
    attention_case(&mut pair, &mut rng, 6, 0, 1, 1, 256, None).await;
}

pub async fn argmax_exact(mut pair: Pair) {
    let mut rng = Rng(9);
    let mut cases: Vec<(Vec<f32>, u32)> = Vec::new();
    cases.push((rng.floats(49_159, 10.0), 7));
    cases.push((rng.floats(1, 1.0), 0));
    // Ties: the lowest index wins, also across threads of the reduction.
    let mut ties = vec![0.5f32; 5000];
    ties[4097] = 2.0;
    ties[300] = 2.0;
    ties[4999] = 2.0;
    cases.push((ties, 0));
    // NaN never wins; all -inf gives 0.
    let mut nan = rng.floats(1000, 1.0);
    nan[10] = f32::NAN;
    nan[900] = 5.0;
    cases.push((nan, 0));
    cases.push((vec![f32::NEG_INFINITY; 300], 0));
    // Chunks with nothing but -inf / NaN before the chunk that holds the only real value (the
    // GPU reduces 1024-logit chunks, then the chunks' winners).
    let mut sparse = vec![f32::NEG_INFINITY; 3000];
    sparse[5] = f32::NAN;
    sparse[2048] = f32::NAN;
    sparse[2500] = -3.0;
    cases.push((sparse, 1));
    // A vocabulary-sized row whose maximum sits at the very end, tied with an earlier chunk.
    let mut vocab = rng.floats(151_936, 4.0);
    vocab[151_935] = 9.0;
    vocab[70_001] = 9.0;
    cases.push((vocab, 0));
    let mut last = vec![-1.0f32; 777];
    last[776] = 0.0;
    cases.push((last, 0));
    for (values, offset) in cases {
        let n = values.len() as u32 - offset;
        let x = pair.f32s(&values);
        let out = pair.bytes(&[0xff; 4]);
        pair.run(Op::Argmax { x, out, p: ArgmaxParams { n, offset } });
        let gpu = read_u32(pair.gpu.as_mut(), out, 0, 1).await.expect("gpu read")[0];
        let cpu = read_u32(&mut pair.cpu, out, 0, 1).await.expect("cpu read")[0];
        note!("{:<58} gpu {gpu} ref {cpu}", format!("Argmax n {n} offset {offset}"));
        assert_eq!(gpu, cpu, "Argmax n {n} offset {offset}");
    }
}

/// A pass of several ops (params in one uniform buffer at dynamic offsets, one submit) equals
/// the same ops run one by one on the oracle; a bad op is a typed error, not a panic.
/// TopK (sampling's candidate selection) word for word against the reference: ties (values on a
/// coarse grid), NaN, +-inf and +-0 in the row, rows shorter than k, one chunk, a chunk and one,
/// a 151,936-logit vocabulary, the largest row one op takes (262,144), an offset row.
pub async fn top_k_exact(mut pair: Pair) {
    let mut rng = Rng(12);
    for (n, k, offset) in [(1u32, 1u32, 0u32), (5, 20, 3), (1000, 64, 0), (1024, 64, 0), (1025, 20, 7), (151_936, 64, 0), (151_936, 1, 151_936), (262_144, 40, 0)] {
        let mut x: Vec<f32> = (0..(offset + n) as usize).map(|_| (rng.unit() * 64.0).round() / 8.0).collect();
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 8.0, 8.0] {
            let at = rng.below(offset + n) as usize;
            x[at] = special;
        }
        let x = pair.f32s(&x);
        let out = pair.zeros(2 * k as usize);
        pair.run(Op::TopK { x, out, p: TopKParams { n, offset, k } });
        let gpu = read_u32(pair.gpu.as_mut(), out, 0, 2 * k as usize).await.expect("gpu read");
        let cpu = read_u32(&mut pair.cpu, out, 0, 2 * k as usize).await.expect("cpu read");
        note!("TopK n {n} k {k} offset {offset}: first {:?}", &gpu[..2.min(gpu.len())]);
        assert_eq!(gpu, cpu, "TopK n {n} k {k} offset {offset}");
    }
    // Rows past what one op takes, and k outside 1..=64, are errors before anything runs.
    let x = pair.zeros(262_145);
    let out = pair.zeros(130);
    for p in [TopKParams { n: 262_145, offset: 0, k: 8 }, TopKParams { n: 100, offset: 0, k: 65 }, TopKParams { n: 100, offset: 0, k: 0 }, TopKParams { n: 0, offset: 0, k: 1 }] {
        let err = pair.gpu.run(&[Op::TopK { x, out, p }]).expect_err("bad top-k must fail");
        note!("rejected: {err}");
    }
}

pub async fn multi_op_pass_and_bad_input(mut pair: Pair) {
    let mut rng = Rng(10);
    let n = 300u32;
    let a = pair.f32s(&rng.floats(n as usize, 1.0));
    let b = pair.f32s(&rng.floats(n as usize, 1.0));
    let out = pair.zeros(n as usize);
    let w = pair.f32s(&rng.floats(100, 1.0));
    let ops = vec![
        Op::Add { a, b, p: ElementwiseParams { n } },
        Op::SwiGlu { gate_up: a, out, p: SwiGluParams { n_tokens: 1, width: n / 2 } },
        Op::Add { a: out, b: a, p: ElementwiseParams { n: 200 } },
        Op::RmsNorm { x: out, weight: w, out: b, p: RmsNormParams { n_rows: 3, n_cols: 100, eps: 1e-5 } },
    ];
    pair.cpu.run(&ops).expect("reference");
    pair.gpu.run(&ops).expect("gpu");
    check("pass of 4 ops: out", &mut pair, out, n as usize, MAX_NMSE_NORM).await;
    check("pass of 4 ops: b", &mut pair, b, n as usize, MAX_NMSE_NORM).await;

    // Too-small buffer, aliasing a written buffer, unknown buffer: errors, and the device still works.
    let bad = [
        Op::Add { a, b, p: ElementwiseParams { n: n + 1 } },
        Op::Add { a, b: a, p: ElementwiseParams { n } },
        Op::Add { a: BufferId(9999), b, p: ElementwiseParams { n } },
    ];
    for op in bad {
        let err = pair.gpu.run(std::slice::from_ref(&op)).expect_err("bad op must fail");
        note!("rejected: {err}");
    }
    // Buffers beyond the device's limits are typed errors too.
    let limit = pair.gpu.info().max_binding_bytes;
    let err = pair.gpu.alloc(BufferKind::Weights, "huge", (limit + 4) & !3).expect_err("over the binding limit");
    note!("rejected: {err}");
    assert!(pair.gpu.alloc(BufferKind::Weights, "odd", 6).is_err());
    pair.run(Op::Add { a, b, p: ElementwiseParams { n } });
    check("after rejected ops", &mut pair, a, n as usize, MAX_NMSE_NORM).await;
}
