// matvec_q6_k: MatVec(Q6_K) -- decode projection y = W x (+ b) for one activation row with a
// Q6_K weight, dequantized on the fly.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments ql | qh | scales | d; k a multiple of 256)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
// Dispatch: workgroup_size 128; entry `main` (32 threads per pair of rows, 8 rows per workgroup),
//   `lanes64` (4 rows) or `lanes128` (2 rows), as engine::shaders::matvec_rows_per_workgroup
//   picks from n; ceil(n / rows) workgroups folded into (x <= 65535, y) by engine::shaders::grid.
//
// Work split: common/matvec_q6_k_f32.wgsl.

#include "common/matvec_rows.wgsl"
#include "common/matvec_q6_k_f32.wgsl"

fn matvec_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    matvec_pairs_f32(wid, nwg, tid, lanes);
}
