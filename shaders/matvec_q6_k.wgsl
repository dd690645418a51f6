// matvec_q6_k: MatVec(Q6_K) -- decode projection y = W x (+ b) for one activation row with a
// Q6_K weight, dequantized on the fly.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments ql | qh | scales | d; k a multiple of 256)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128, 4 output rows per workgroup (common/matvec_rows.wgsl);
//   ceil(n / 4) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: a super-block's 128 ql bytes are 8 slots of 16 bytes. Slot t = 4 half + u holds the
// low 4 bits of elements 128 half + 16u + (0..15) (low nibbles) and of the same + 64 (high
// nibbles); their top 2 bits are in qh bytes 32 half + 16 (u % 2) + (0..15), at bit 2 (u / 2) and
// 4 + 2 (u / 2). Each 16 elements share one signed scale: x = d * scale * (q - 32).

#include "common/matvec_rows.wgsl"

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
    let x_row4 = p.x_row * (p.k / 4u);
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let slots = blocks_per_row * 8u;
    for (var s = tid; s < slots; s += THREADS) {
        let b = s / 8u;
        let half_index = (s % 8u) / 4u;
        let u = s % 4u;
        let xi = x_row4 + b * 64u + half_index * 32u + u * 4u;
        let xl0 = x[xi];
        let xl1 = x[xi + 1u];
        let xl2 = x[xi + 2u];
        let xl3 = x[xi + 3u];
        let xh0 = x[xi + 16u];
        let xh1 = x[xi + 17u];
        let xh2 = x[xi + 18u];
        let xh3 = x[xi + 19u];
        let sum_lo = horizontal_sum((xl0 + xl1) + (xl2 + xl3));
        let sum_hi = horizontal_sum((xh0 + xh1) + (xh2 + xh3));
        let shift_lo = 2u * (u / 2u);
        let shift_hi = shift_lo + 4u;
        for (var r = 0u; r < ROWS; r++) {
            let block = clamped_row(row0, r) * blocks_per_row + b;
            let ql = weights[block * 8u + s % 8u];
            let qh = weights[8u * n_blocks + block * 4u + half_index * 2u + u % 2u];
            let scales = weights[12u * n_blocks + block];
            let d = unpack2x16float(word_at(52u * n_blocks + block / 2u))[block % 2u];
            let dot_lo = dot(small_to_f32(byte_fields(ql.x, 0u, 0xfu) | (byte_fields(qh.x, shift_lo, 3u) << vec4<u32>(4u))), xl0)
                + dot(small_to_f32(byte_fields(ql.y, 0u, 0xfu) | (byte_fields(qh.y, shift_lo, 3u) << vec4<u32>(4u))), xl1)
                + dot(small_to_f32(byte_fields(ql.z, 0u, 0xfu) | (byte_fields(qh.z, shift_lo, 3u) << vec4<u32>(4u))), xl2)
                + dot(small_to_f32(byte_fields(ql.w, 0u, 0xfu) | (byte_fields(qh.w, shift_lo, 3u) << vec4<u32>(4u))), xl3);
            let dot_hi = dot(small_to_f32(byte_fields(ql.x, 4u, 0xfu) | (byte_fields(qh.x, shift_hi, 3u) << vec4<u32>(4u))), xh0)
                + dot(small_to_f32(byte_fields(ql.y, 4u, 0xfu) | (byte_fields(qh.y, shift_hi, 3u) << vec4<u32>(4u))), xh1)
                + dot(small_to_f32(byte_fields(ql.z, 4u, 0xfu) | (byte_fields(qh.z, shift_hi, 3u) << vec4<u32>(4u))), xh2)
                + dot(small_to_f32(byte_fields(ql.w, 4u, 0xfu) | (byte_fields(qh.w, shift_hi, 3u) << vec4<u32>(4u))), xh3);
            let scale_lo = signed_byte(scales, 8u * half_index + u);
            let scale_hi = signed_byte(scales, 8u * half_index + 4u + u);
            acc[r] += d * (scale_lo * (dot_lo - 32.0 * sum_lo) + scale_hi * (dot_hi - 32.0 * sum_hi));
        }
    }
    finish_rows(tid, row0, acc);
}
