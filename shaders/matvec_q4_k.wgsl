// matvec_q4_k: MatVec(Q4_K) -- decode projection y = W x (+ b) for one activation row with a
// Q4_K weight, dequantized on the fly.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments dm_scales | qs; k a multiple of 256)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128, 4 output rows per workgroup (common/matvec_rows.wgsl);
//   ceil(n / 4) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: a super-block's 128 qs bytes are 8 slots of 16 bytes. Slot t holds bytes
// 32c + 16h .. +15 (c = t / 2, h = t % 2): low nibbles are elements 16h.. of sub-block 2c, high
// nibbles the same elements of sub-block 2c + 1. Per sub-block the weight is d*sc*q - dmin*m, so a
// slot needs sum(q x) and sum(x) per sub-block; sum(x) is shared by all rows.

#include "common/matvec_rows.wgsl"
#include "common/k_scales.wgsl"

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
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    // dm_scales: one vec4 per block (d/dmin pair, 3 scale words); qs: 8 vec4 per block.
    let qs_seg4 = n_blocks;
    let x_row4 = p.x_row * (p.k / 4u);
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let slots = blocks_per_row * 8u;
    for (var s = tid; s < slots; s += THREADS) {
        let b = s / 8u;
        let c = (s % 8u) / 2u;
        let h = s % 2u;
        let xi = x_row4 + b * 64u + c * 16u + h * 4u;
        let xl0 = x[xi];
        let xl1 = x[xi + 1u];
        let xl2 = x[xi + 2u];
        let xl3 = x[xi + 3u];
        let xh0 = x[xi + 8u];
        let xh1 = x[xi + 9u];
        let xh2 = x[xi + 10u];
        let xh3 = x[xi + 11u];
        let sum_lo = horizontal_sum((xl0 + xl1) + (xl2 + xl3));
        let sum_hi = horizontal_sum((xh0 + xh1) + (xh2 + xh3));
        for (var r = 0u; r < ROWS; r++) {
            let block = clamped_row(row0, r) * blocks_per_row + b;
            let q = weights[qs_seg4 + block * 8u + c * 2u + h];
            let block_meta = weights[block];
            let dm = unpack2x16float(block_meta.x);
            let lo = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c);
            let hi = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c + 1u);
            let dot_lo = dot(small_to_f32(byte_fields(q.x, 0u, 0xfu)), xl0) + dot(small_to_f32(byte_fields(q.y, 0u, 0xfu)), xl1)
                + dot(small_to_f32(byte_fields(q.z, 0u, 0xfu)), xl2) + dot(small_to_f32(byte_fields(q.w, 0u, 0xfu)), xl3);
            let dot_hi = dot(small_to_f32(byte_fields(q.x, 4u, 0xfu)), xh0) + dot(small_to_f32(byte_fields(q.y, 4u, 0xfu)), xh1)
                + dot(small_to_f32(byte_fields(q.z, 4u, 0xfu)), xh2) + dot(small_to_f32(byte_fields(q.w, 4u, 0xfu)), xh3);
            acc[r] += dm.x * (f32(lo.x) * dot_lo + f32(hi.x) * dot_hi) - dm.y * (f32(lo.y) * sum_lo + f32(hi.y) * sum_hi);
        }
    }
    finish_rows(tid, row0, acc);
}
