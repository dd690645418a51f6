// add_rms_norm: AddRmsNorm -- residual += x; out = weight * rmsnorm(residual), per row. Fuses the
// residual add of the previous block with the next block's input norm.
//
// Bindings (group 0):
//   0 uniform RmsNormParams { n_rows, n_cols, eps }
//   1 x: array<f32>                       [n_rows, n_cols]
//   2 weight: array<f32>                  [n_cols]
//   3 residual: array<f32> (read_write)   [n_rows, n_cols], updated in place
//   4 out: array<f32> (read_write)        [n_rows, n_cols]
//   5 planes: array<vec4<u32>> (read_write; `planes_main` only: the device scratch, common/planes.wgsl)
// Dispatch: workgroup_size 256, one workgroup per row; n_rows folded into (x <= 65535, y).
//   `planes_main` (one row, n_cols a multiple of 16; engine::shaders::pass_plans picks it when a
//   planes matvec reads `out` next) also writes the row as activation planes, so that matvec
//   skips its `quantize` dispatch: one workgroup.

#include "common/grid.wgsl"
#include "common/row_sum.wgsl"
#include "common/planes.wgsl"

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
@group(0) @binding(5) var<storage, read_write> planes: array<vec4<u32>>;

// residual += x over the row starting at `base`; returns 1 / rms of the new residual row.
// Must be called from workgroup-uniform control flow.
fn add_residual(base: u32, lid: u32) -> f32 {
    var squares = 0.0;
    // Each thread re-reads only the residual elements it wrote itself: no barrier needed. Four
    // elements per step with all loads before the stores (which the compiler must assume may
    // alias them): a 4096-wide row costs each thread 4 memory round trips instead of 16.
    // Indices past the row are clamped for the loads and skipped for the stores.
    let last = base + p.n_cols - 1u;
    for (var c0 = base + lid; c0 <= last; c0 += 1024u) {
        let i1 = min(c0 + 256u, last);
        let i2 = min(c0 + 512u, last);
        let i3 = min(c0 + 768u, last);
        let v0 = residual[c0] + x[c0];
        let v1 = residual[i1] + x[i1];
        let v2 = residual[i2] + x[i2];
        let v3 = residual[i3] + x[i3];
        residual[c0] = v0;
        squares += v0 * v0;
        if (c0 + 256u <= last) {
            residual[i1] = v1;
            squares += v1 * v1;
        }
        if (c0 + 512u <= last) {
            residual[i2] = v2;
            squares += v2 * v2;
        }
        if (c0 + 768u <= last) {
            residual[i3] = v3;
            squares += v3 * v3;
        }
    }
    let mean_square = workgroup_sum(squares, lid) / f32(p.n_cols);
    return 1.0 / sqrt(mean_square + p.eps);
}

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
    let last = base + p.n_cols - 1u;
    let inv = add_residual(base, lid);
    // Same element-to-thread mapping as add_residual, four loads of each array in flight per step.
    for (var c0 = base + lid; c0 <= last; c0 += 1024u) {
        let i1 = min(c0 + 256u, last);
        let i2 = min(c0 + 512u, last);
        let i3 = min(c0 + 768u, last);
        let r0 = residual[c0];
        let r1 = residual[i1];
        let r2 = residual[i2];
        let r3 = residual[i3];
        let w0 = weight[c0 - base];
        let w1 = weight[i1 - base];
        let w2 = weight[i2 - base];
        let w3 = weight[i3 - base];
        out[c0] = w0 * (r0 * inv);
        if (c0 + 256u <= last) {
            out[i1] = w1 * (r1 * inv);
        }
        if (c0 + 512u <= last) {
            out[i2] = w2 * (r2 * inv);
        }
        if (c0 + 768u <= last) {
            out[i3] = w3 * (r3 * inv);
        }
    }
}

// Row 0 as `main`, then its planes: four threads per 16-element group (thread t takes elements
// 4t.. of every 1024, so the residual is re-read across threads: storageBarrier first), their
// (max, sum) exchanged in workgroup memory. `out` gets the same values as from `main`; the
// planes are those `quantize` would write from `out`. (Tried on the H100: quarters owned by one
// thread through both phases with all loads first, no storageBarrier -- slower, 13.9 vs 12.9 µs.)
@compute @workgroup_size(256)
fn planes_main(@builtin(local_invocation_index) lid: u32) {
    let inv = add_residual(0u, lid);
    storageBarrier();
    let quarters = p.n_cols / 4u;
    for (var base = 0u; base < quarters; base += 256u) {
        let q = base + lid;
        let live = q < quarters;
        var v = vec4<f32>(0.0);
        if (live) {
            let i = 4u * q;
            v = vec4<f32>(weight[i], weight[i + 1u], weight[i + 2u], weight[i + 3u])
                * (vec4<f32>(residual[i], residual[i + 1u], residual[i + 2u], residual[i + 3u]) * inv);
            out[i] = v.x;
            out[i + 1u] = v.y;
            out[i + 2u] = v.z;
            out[i + 3u] = v.w;
        }
        write_row_quarter(lid, live, p.n_cols / GROUP_ELEMENTS, q, v);
        // The next step overwrites the stats.
        workgroupBarrier();
    }
}
