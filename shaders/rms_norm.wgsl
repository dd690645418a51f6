// rms_norm: RmsNorm -- out[r] = weight * (x[r] / sqrt(mean(x[r]^2) + eps)) per row (HF order).
// Also the per-head q/k norm of qwen3 (rows = tokens x heads, cols = head_dim).
//
// Bindings (group 0):
//   0 uniform RmsNormParams { n_rows, n_cols, eps }
//   1 x: array<f32>                  [n_rows, n_cols]
//   2 weight: array<f32>             [n_cols]
//   3 out: array<f32> (read_write)   [n_rows, n_cols]
// Dispatch: workgroup_size 256, one workgroup per row; n_rows folded into (x <= 65535, y).

#include "common/grid.wgsl"
#include "common/row_sum.wgsl"

struct RmsNormParams {
    n_rows: u32,
    n_cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: RmsNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.n_rows) {
        return;
    }
    let base = row * p.n_cols;
    var squares = 0.0;
    for (var c = lid; c < p.n_cols; c += 256u) {
        let v = x[base + c];
        squares += v * v;
    }
    let mean_square = workgroup_sum(squares, lid) / f32(p.n_cols);
    let inv = 1.0 / sqrt(mean_square + p.eps);
    for (var c = lid; c < p.n_cols; c += 256u) {
        out[base + c] = weight[c] * (x[base + c] * inv);
    }
}
