// matmul_coop_q8_0: MatMul(Q8_0) on cooperative matrices (tensor cores) -- prefill projection
// Y = X W^T (+ b) for m activation rows with a Q8_0 weight; weight x activation rows per
// workgroup 64 x 64 (`main`), 64 x 128 (`rows128`) or 128 x 128 (`wide`); operands split into
// f16 hi + lo terms for f32 accuracy (common/matmul_coop_body.wgsl). Native only: the engine runs it instead of
// matmul_q8_0.wgsl where the adapter has 16x16x16 f16/f32 cooperative matrices, 32-lane subgroups.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m, n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<u32>            packed [n, k] (SoA segments d | qs; k a multiple of 32)
//   2 x: array<f32>                  [x_row + m, k]
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[i * out_stride + out_col + r], i < m, r < n
// Dispatch: `main`: workgroup_size (128), (ceil(n / 64), ceil(m / 64), 1) workgroups;
// `rows128`: workgroup_size (256), (ceil(n / 64), ceil(m / 128), 1) workgroups;
// `wide`: workgroup_size (256), (ceil(n / 128), ceil(m / 128), 1) workgroups.

enable f16;
enable wgpu_cooperative_matrix;

#include "common/dequant_q8_0.wgsl"
#include "common/matmul_coop_body.wgsl"
