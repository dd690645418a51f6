//! Acceptance 2: every kernel in shaders/ on the GPU simulator against the `RefDevice` oracle,
//! through the case list shared with the wgpu tests (engine/tests/kernel_cases), seeded random
//! inputs and odd shapes included.

#[path = "../../engine/tests/kernel_cases/mod.rs"]
mod kernel_cases;

use kernel_cases::Pair;
use qwglm_sim::{SimDevice, SimOptions};

fn pair() -> Pair {
    Pair::new(Box::new(SimDevice::new(SimOptions::default()).expect("simulator")))
}

#[test]
fn embed_every_format() {
    pollster::block_on(kernel_cases::embed_every_format(pair()));
}

#[test]
fn matvec_every_format() {
    pollster::block_on(kernel_cases::matvec_every_format(pair()));
}

/// The planes mat-vecs (shaders/matvec_planes_<format>.wgsl: `quantize`, integer dot products,
/// their f32 entry points for small matrices), with the GPU's plan, as a GPU offering them runs
/// them.
#[test]
fn matvec_every_format_planes() {
    let variants = engine::shaders::Variants { planes_matvecs: true, ..Default::default() };
    let sim = SimDevice::new(SimOptions { variants, ..Default::default() }).expect("simulator");
    pollster::block_on(kernel_cases::matvec_every_format(Pair::new(Box::new(sim))));
}

/// Passes where a norm / SwiGLU writes the planes the next matvec reads (`pass_plans`), on the
/// planes variants.
#[test]
fn planes_producer_passes() {
    let variants = engine::shaders::Variants { planes_matvecs: true, ..Default::default() };
    let sim = SimDevice::new(SimOptions { variants, ..Default::default() }).expect("simulator");
    pollster::block_on(kernel_cases::planes_producer_passes(Pair::new(Box::new(sim))));
}

#[test]
fn top_k_exact() {
    pollster::block_on(kernel_cases::top_k_exact(pair()));
}

#[test]
fn matmul_every_format() {
    pollster::block_on(kernel_cases::matmul_every_format(pair()));
}

const TENSOR_CORES: engine::shaders::Variants = engine::shaders::Variants { tensor_cores: true, planes_matvecs: false, planes_min_weights: None, wide_attention: false };

/// The simulator with the tensor-core MatMul kernels (matmul_coop_<format>.wgsl: cooperative
/// matrices, f16 hi + lo operands) in place of the plain ones, tiles as `WgpuDevice` picks them.
fn tensor_core_pair() -> Pair {
    Pair::new(Box::new(SimDevice::new(SimOptions { variants: TENSOR_CORES, ..Default::default() }).expect("simulator")))
}

#[test]
fn matmul_tensor_cores_every_format() {
    pollster::block_on(kernel_cases::matmul_every_format(tensor_core_pair()));
}

/// Every format on each of the three entry points (`main`, `rows128`, `wide`), partial tiles.
#[test]
fn matmul_tensor_cores_tile_shapes() {
    // The shapes of `matmul_tile_shapes_every_format` reach each entry point (plan_for's
    // workgroup-count thresholds decide).
    use engine::device::BufferId;
    use engine::kernels::{MatMulParams, Op, WeightBuf};
    let entry = |m: u32, n: u32| {
        let w = WeightBuf { buf: BufferId(0), format: engine::quant::GgmlType::F32, rows: n, cols: 40 };
        let p = MatMulParams { m, n, k: 40, x_row: 0, has_bias: 0, out_stride: n, out_col: 0 };
        let op = Op::MatMul { w, x: BufferId(1), bias: None, out: BufferId(2), p };
        let plan = engine::shaders::plan_for(&op, TENSOR_CORES).expect("plan");
        engine::shaders::entry_points_for(op.kernel_id(), TENSOR_CORES)[plan[0].entry]
    };
    assert_eq!([entry(70, 131), entry(130, 8133), entry(129, 32650)], ["main", "rows128", "wide"]);
    pollster::block_on(kernel_cases::matmul_tile_shapes_every_format(tensor_core_pair()));
}

#[test]
fn norms() {
    pollster::block_on(kernel_cases::norms(pair()));
}

#[test]
fn rope_kv_write() {
    pollster::block_on(kernel_cases::rope_kv_write(pair()));
}

#[test]
fn rope_attention_decode() {
    pollster::block_on(kernel_cases::rope_attention_decode(pair()));
}

#[test]
fn swiglu_add() {
    pollster::block_on(kernel_cases::swiglu_add(pair()));
}

#[test]
fn attention_decode() {
    pollster::block_on(kernel_cases::attention_decode(pair()));
}

#[test]
fn attention_prefill() {
    pollster::block_on(kernel_cases::attention_prefill(pair()));
}

/// The same cases on attention.wgsl's `prefill_wide` (64-row workgroups), as a GPU with its
/// workgroup memory runs them.
#[test]
fn attention_prefill_wide() {
    let variants = engine::shaders::Variants { wide_attention: true, ..Default::default() };
    let sim = SimDevice::new(SimOptions { variants, ..Default::default() }).expect("simulator");
    pollster::block_on(kernel_cases::attention_prefill(Pair::new(Box::new(sim))));
}

#[test]
fn argmax_exact() {
    pollster::block_on(kernel_cases::argmax_exact(pair()));
}

#[test]
fn multi_op_pass_and_bad_input() {
    pollster::block_on(kernel_cases::multi_op_pass_and_bad_input(pair()));
}

/// Every kernel file in shaders/ was compiled (the registry and the bytecode agree).
#[test]
fn every_registry_kernel_has_bytecode() {
    let programs = qwglm_sim::kernel_programs().expect("bytecode");
    for kernel in engine::shaders::all_kernels() {
        let file = engine::shaders::kernel_file(kernel).expect("file");
        let program = programs.iter().find(|p| p.file == file).unwrap_or_else(|| panic!("{kernel:?}: no bytecode for {file}"));
        for entry in engine::shaders::entry_points(kernel) {
            assert!(program.entry(entry).is_some(), "{file}: no entry {entry}");
        }
        // The variants too (native builds embed the tensor-core ones).
        let all = engine::shaders::Variants { tensor_cores: true, planes_matvecs: true, planes_min_weights: None, wide_attention: true };
        let file = engine::shaders::kernel_file_for(kernel, all).expect("file");
        let program = programs.iter().find(|p| p.file == file).unwrap_or_else(|| panic!("{kernel:?}: no bytecode for {file}"));
        for entry in engine::shaders::entry_points_for(kernel, all) {
            assert!(program.entry(entry).is_some(), "{file}: no entry {entry}");
        }
    }
}

/// Register allocation (sim/lower/src/regalloc.rs): values with disjoint live ranges share
/// registers, so the hot mat-vec's register file stays small (it had 180 registers, 46 KB a warp,
/// before the pass; 26 after).
#[test]
fn matvec_register_file_stays_small() {
    let programs = qwglm_sim::kernel_programs().expect("bytecode");
    for file in ["matvec_q4_0.wgsl", "matvec_q4_1.wgsl"] {
        let program = programs.iter().find(|p| p.file == file).expect("kernel");
        let main = program.entry("main").expect("main");
        assert!(main.n_regs <= 40, "{file}: {} registers", main.n_regs);
    }
}

/// The simulator's own mat-vec entry point (one row per lane, sim/src/device.rs) keeps its loop
/// short: the counter and the activation reads are warp-uniform (scalar registers, one read per
/// warp), the nibble unpack is one instruction per weight and loop-invariant scalar work is
/// hoisted (the Q4_1 loop was 70 instructions per 8 weights a lane with the GPU's geometry, 45
/// now).
#[test]
fn sim_matvec_loop_stays_short() {
    use qwglm_sim_lower::isa::Inst;
    let programs = qwglm_sim::kernel_programs().expect("bytecode");
    let program = programs.iter().find(|p| p.file == "matvec_q4_1.wgsl").expect("kernel");
    let entry = program.entry("sim_row_per_thread").expect("entry");
    let (top, back) = entry
        .insts
        .iter()
        .enumerate()
        .find_map(|(i, inst)| match *inst {
            Inst::JumpIfAny { to } if (to as usize) < i => Some((to as usize, i)),
            _ => None,
        })
        .expect("a loop");
    let body = &entry.insts[top..=back];
    assert!(body.len() <= 50, "{} instructions in the loop", body.len());
    assert!(body.iter().any(|i| matches!(i, Inst::SMovIfAny { .. })), "a scalar loop counter");
    // (`UnpackFSDot4` reads its four activations at a scalar address itself.)
    assert!(body.iter().any(|i| matches!(i, Inst::LdStorageBelowNS { .. } | Inst::UnpackFSDot4 { .. })), "activations read once per warp");
    assert!(!body.iter().any(|i| matches!(i, Inst::SLdUniform { .. })), "params loads hoisted");
    // The whole-block entry (what `SimDevice` runs for Q4_1): the scale pair and the four qs
    // words read once per block, its eight 4-weight dot products fused.
    let entry = program.entry("sim_block_per_thread").expect("block entry");
    assert!(entry.insts.iter().any(|i| matches!(i, Inst::LdStorageN { n: 4, .. })), "the block's qs words in one load");
    assert_eq!(entry.insts.iter().filter(|i| matches!(i, Inst::UnpackFSDot4 { .. })).count(), 4, "two groups of 8 per inner pass");
    assert!(entry.insts.len() <= 120, "{} instructions", entry.insts.len());
}
