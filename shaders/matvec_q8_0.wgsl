// matvec_q8_0: MatVec(Q8_0) -- decode projection y = W x (+ b) for one activation row with a
// Q8_0 weight, dequantized on the fly (fused dequant-matvec).
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments d | qs; k a multiple of 32)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128; entry `main` (32 threads per pair of rows, 8 rows per workgroup),
//   `lanes64` (4 rows) or `lanes128` (2 rows), as engine::shaders::matvec_rows_per_workgroup
//   picks from n; ceil(n / rows) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: `lanes` threads per pair of rows (thread t works on rows 2(t / lanes) and the next),
// each taking whole 32-element blocks of both rows (two 16-byte loads of signed bytes per row,
// the activations loaded once): at k = 896 a row is 28 blocks, at most one per thread.

#include "common/matvec_rows.wgsl"

fn signed_bytes(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// The block dot product of one weight row's block (q0, q1 = its 32 signed bytes, d its scale).
fn block_dot(q0: vec4<u32>, q1: vec4<u32>, d: f32, v: XBlock) -> f32 {
    let lo = (dot(signed_bytes(q0.x), v.lo0) + dot(signed_bytes(q0.y), v.lo1)) + (dot(signed_bytes(q0.z), v.lo2) + dot(signed_bytes(q0.w), v.lo3));
    let hi = (dot(signed_bytes(q1.x), v.hi0) + dot(signed_bytes(q1.y), v.hi1)) + (dot(signed_bytes(q1.z), v.hi2) + dot(signed_bytes(q1.w), v.hi3));
    return d * (lo + hi);
}

fn matvec_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 32u;
    let n_blocks = p.n * blocks_per_row;
    // d: one f16 per block (two per word); qs: 2 vec4 per block, after the 16-byte aligned d segment.
    let qs_seg4 = (n_blocks * 2u + 15u) / 16u;
    let x_row4 = p.x_row * (p.k / 4u);
    // Each thread works on two rows at once: the activations are loaded once for both (the
    // matvecs are bound by these loads more than by the weight bytes), four weight loads in flight.
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    for (var b = tid % lanes; b < blocks_per_row; b += lanes) {
        let block_a = rows.x + b;
        let block_b = rows.y + b;
        let qa0 = weights[qs_seg4 + block_a * 2u];
        let qa1 = weights[qs_seg4 + block_a * 2u + 1u];
        let v = x_block(x_row4 + b * 8u);
        let qb0 = weights[qs_seg4 + block_b * 2u];
        let qb1 = weights[qs_seg4 + block_b * 2u + 1u];
        sum_a += block_dot(qa0, qa1, block_scale(block_a), v);
        sum_b += block_dot(qb0, qb1, block_scale(block_b), v);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
