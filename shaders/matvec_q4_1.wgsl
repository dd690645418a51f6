// matvec_q4_1: MatVec(Q4_1) -- decode projection y = W x (+ b) for one activation row with a
// Q4_1 weight, dequantized on the fly (fused dequant-matvec).
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<u32>            packed [n, k] (SoA segments dm | qs; k a multiple of 32)
//   2 x: array<f32>                  [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 64 = 2 output rows x 32 lanes; ceil(n / 2) workgroups folded into
//   (x <= 65535, y) by engine::shaders::grid.

#include "common/dequant_q4_1.wgsl"
#include "common/matvec_body.wgsl"

// One thread per row and a whole block (32 weights) per loop pass, for the GPU simulator
// (sim/src/device.rs prefers it to `sim_row_per_thread`; the GPU never runs it): the block's
// scale pair and its four `qs` words are read and widened once per block instead of once per 8
// weights. The groups of 8 are summed in `sim_row_per_thread`'s order (group g = 4 b + 2 h + q
// reads qs words 2q, 2q + 1 at nibble shift 4h, as `dequant8`), so the results are the same.
@compute @workgroup_size(64)
fn sim_block_per_thread(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (row >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 32u;
    let qs = segment_words(4u * p.n * blocks_per_row);
    let x_base = p.x_row * p.k;
    var acc = 0.0;
    for (var b = 0u; b < blocks_per_row; b++) {
        let block = row * blocks_per_row + b;
        let dm = unpack2x16float(weights[block]);
        let word = qs + block * 4u;
        let w0 = weights[word];
        let w1 = weights[word + 1u];
        let w2 = weights[word + 2u];
        let w3 = weights[word + 3u];
        for (var h = 0u; h < 2u; h++) {
            let shift = vec4<u32>(h * 4u);
            let g = 4u * b + 2u * h;
            let v0 = load_x8(x_base, g, p.k);
            let lo0 = dm.x * vec4<f32>((bytes4(w0) >> shift) & vec4<u32>(0xfu)) + dm.y;
            let hi0 = dm.x * vec4<f32>((bytes4(w1) >> shift) & vec4<u32>(0xfu)) + dm.y;
            acc += dot(lo0, v0.lo) + dot(hi0, v0.hi);
            let v1 = load_x8(x_base, g + 1u, p.k);
            let lo1 = dm.x * vec4<f32>((bytes4(w2) >> shift) & vec4<u32>(0xfu)) + dm.y;
            let hi1 = dm.x * vec4<f32>((bytes4(w3) >> shift) & vec4<u32>(0xfu)) + dm.y;
            acc += dot(lo1, v1.lo) + dot(hi1, v1.hi);
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[row];
    }
    out[p.out_col + row] = acc;
}
