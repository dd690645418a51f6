// matvec_q5_0: MatVec(Q5_0) -- decode projection y = W x (+ b) for one activation row with a
// Q5_0 weight, dequantized on the fly (fused dequant-matvec).
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments d | qh | qs; k a multiple of 32)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128; entry `main` (32 threads per pair of rows, 8 rows per workgroup),
//   `lanes64` (4 rows) or `lanes128` (2 rows), as engine::shaders::matvec_rows_per_workgroup
//   picks from n; ceil(n / rows) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: `lanes` threads per pair of rows (thread t works on rows 2(t / lanes) and the
// next), each taking whole 32-element blocks of both rows, the activations loaded once: the 16 qs
// bytes (one 16-byte load) hold elements 0..15 in the low nibbles and 16..31 in the high ones; bit j of the qh word is element j's fifth bit. x = d * (q - 16), so a block's dot
// is d * (dot(q, x) - 16 sum(x)).

#include "common/matvec_rows.wgsl"

// Elements 4i..4i+3 of a half (nibble shift 0 or 4) with their fifth bits from `high` (bit j
// of `high` belongs to element j of the half).
fn q5_quad(word: u32, nibble_shift: u32, high: u32, i: u32) -> vec4<f32> {
    let fifth = ((vec4<u32>(high) >> (vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * i))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return small_to_f32(byte_fields(word, nibble_shift, 0xfu) | fifth);
}

// sum(q x) - 16 sum(x) of one weight row's block (q its 4-bit quads, qh its fifth bits), with the
// block's activations and their sum.
fn block_dot(q: vec4<u32>, qh: u32, v: XBlock, x_sum: f32) -> f32 {
    let hi = qh >> 16u;
    let dot_lo = (dot(q5_quad(q.x, 0u, qh, 0u), v.lo0) + dot(q5_quad(q.y, 0u, qh, 1u), v.lo1))
        + (dot(q5_quad(q.z, 0u, qh, 2u), v.lo2) + dot(q5_quad(q.w, 0u, qh, 3u), v.lo3));
    let dot_hi = (dot(q5_quad(q.x, 4u, hi, 0u), v.hi0) + dot(q5_quad(q.y, 4u, hi, 1u), v.hi1))
        + (dot(q5_quad(q.z, 4u, hi, 2u), v.hi2) + dot(q5_quad(q.w, 4u, hi, 3u), v.hi3));
    return (dot_lo + dot_hi) - 16.0 * x_sum;
}

fn matvec_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 32u;
    let n_blocks = p.n * blocks_per_row;
    // Segments, each 16-byte aligned: d (2 bytes per block), qh (4), qs (16, one vec4).
    let qh_seg = ((n_blocks * 2u + 15u) / 16u) * 4u;
    let qs_seg4 = qh_seg / 4u + (n_blocks * 4u + 15u) / 16u;
    let x_row4 = p.x_row * (p.k / 4u);
    // Two rows per thread: the activations are loaded once for both.
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    for (var b = tid % lanes; b < blocks_per_row; b += lanes) {
        let block_a = rows.x + b;
        let block_b = rows.y + b;
        let qa = weights[qs_seg4 + block_a];
        let qha = word_at(qh_seg + block_a);
        let v = x_block(x_row4 + b * 8u);
        let x_sum = x_block_sum(v);
        sum_a += block_scale(block_a) * block_dot(qa, qha, v, x_sum);
        let qb = weights[qs_seg4 + block_b];
        let qhb = word_at(qh_seg + block_b);
        sum_b += block_scale(block_b) * block_dot(qb, qhb, v, x_sum);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
