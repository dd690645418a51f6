// add_rms_norm: AddRmsNorm -- residual += x; out = weight * rmsnorm(residual), per row. Fuses the
// residual add of the previous block with the next block's input norm.
//
// Bindings (group 0):
//   0 uniform RmsNormParams { n_rows, n_cols, eps }
//   1 x: array<f32>                       [n_rows, n_cols]
//   2 weight: array<f32>                  [n_cols]
//   3 residual: array<f32> (read_write)   [n_rows, n_cols], updated in place
//   4 out: array<f32> (read_write)        [n_rows, n_cols]
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
@group(0) @binding(3) var<storage, read_write> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
    // Each thread re-reads only the residual elements it wrote itself: no barrier needed. Four
    // elements per step: all loads are issued before the stores (which may alias for the
    // compiler), so a 4096-wide row costs 4 memory round trips per thread instead of 16.
    for (var c0 = lid; c0 < p.n_cols; c0 += 1024u) {
        var v = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + 256u * j;
            if (c < p.n_cols) {
                v[j] = residual[base + c] + x[base + c];
            }
        }
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + 256u * j;
            if (c < p.n_cols) {
                residual[base + c] = v[j];
                squares += v[j] * v[j];
            }
        }
    }
    let mean_square = workgroup_sum(squares, lid) / f32(p.n_cols);
    let inv = 1.0 / sqrt(mean_square + p.eps);
    for (var c0 = lid; c0 < p.n_cols; c0 += 1024u) {
        var y = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + 256u * j;
            if (c < p.n_cols) {
                y[j] = weight[c] * (residual[base + c] * inv);
            }
        }
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + 256u * j;
            if (c < p.n_cols) {
                out[base + c] = y[j];
            }
        }
    }
}
