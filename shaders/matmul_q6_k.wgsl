// matmul_q6_k: MatMul(Q6_K) -- prefill projection Y = X W^T (+ b) for m activation rows with a
// Q6_K weight, 64 x 64 output tiles (4 x 4 per thread) staged through workgroup memory.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m, n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<u32>            packed [n, k] (SoA segments ql | qh | scales | d; k a multiple of 256)
//   2 x: array<f32>                  [x_row + m, k]
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[i * out_stride + out_col + r], i < m, r < n
// Dispatch: workgroup_size (16, 16); (ceil(n / 64), ceil(m / 64), 1) workgroups (64 x 64 output tiles).

#include "common/dequant_q6_k.wgsl"
#include "common/matmul_body.wgsl"
