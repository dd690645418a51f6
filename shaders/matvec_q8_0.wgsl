// matvec_q8_0: MatVec(Q8_0) -- decode projection y = W x (+ b) for one activation row with a
// Q8_0 weight, dequantized on the fly (fused dequant-matvec).
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments d | qs; k a multiple of 32)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128, 4 output rows per workgroup (common/matvec_rows.wgsl);
//   ceil(n / 4) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: 32 threads per row (thread t works on row t / 32), each taking whole 32-element
// blocks (two 16-byte loads of signed bytes): at k = 896 a row is 28 blocks, one per thread.

#include "common/matvec_rows.wgsl"

fn signed_bytes(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

@compute @workgroup_size(128)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row0 = first_row(wid, nwg);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 32u;
    let n_blocks = p.n * blocks_per_row;
    // d: one f16 per block (two per word); qs: 2 vec4 per block, after the 16-byte aligned d segment.
    let qs_seg4 = (n_blocks * 2u + 15u) / 16u;
    let x_row4 = p.x_row * (p.k / 4u);
    let r = tid / 32u;
    let row_blocks = clamped_row(row0, r) * blocks_per_row;
    var sum = 0.0;
    for (var b = tid % 32u; b < blocks_per_row; b += 32u) {
        let block = row_blocks + b;
        let xi = x_row4 + b * 8u;
        let q0 = weights[qs_seg4 + block * 2u];
        let q1 = weights[qs_seg4 + block * 2u + 1u];
        let d = unpack2x16float(word_at(block / 2u))[block % 2u];
        let lo = (dot(signed_bytes(q0.x), x[xi]) + dot(signed_bytes(q0.y), x[xi + 1u]))
            + (dot(signed_bytes(q0.z), x[xi + 2u]) + dot(signed_bytes(q0.w), x[xi + 3u]));
        let hi = (dot(signed_bytes(q1.x), x[xi + 4u]) + dot(signed_bytes(q1.y), x[xi + 5u]))
            + (dot(signed_bytes(q1.z), x[xi + 6u]) + dot(signed_bytes(q1.w), x[xi + 7u]));
        sum += d * (lo + hi);
    }
    finish_row_lanes(tid, row0, sum);
}
