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
