// add_rms_norm: AddRmsNorm -- residual_out = residual + x; out = weight * rmsnorm(residual_out),
// per row. Fuses the residual add of the previous block with the next block's input norm.
//
// Bindings (group 0):
//   0 uniform RmsNormParams { n_rows, n_cols, eps }
//   1 x: array<f32>                           [n_rows, n_cols]
//   2 weight: array<f32>                      [n_cols]
//   3 residual: array<f32>                    [n_rows, n_cols]
//   4 residual_out: array<f32> (read_write)   [n_rows, n_cols] (a buffer apart from residual:
//       the one-row entries read the whole input row in every workgroup)
//   5 out: array<f32> (read_write)            [n_rows, n_cols]
//   6 planes: array<vec4<u32>> (read_write; `planes_main` only: the device scratch, common/planes.wgsl)
// Dispatch (engine::shaders::plan_for):
//   `main`: workgroup_size 256, one workgroup per row; n_rows folded into (x <= 65535, y).
//   `row_slices` (one row, n_cols a multiple of 4): workgroup_size 256, ceil(n_cols / 1024)
//   workgroups; each sums the squares of the whole row (its loads all in flight at once) and
//   writes its 1024 columns. A decode step's norm was one workgroup on one SM, a chain of memory
//   round trips and barriers (H100, 4,096 columns: 7-8 µs of GPU time).
//   `planes_main` (one row, n_cols a multiple of 16; engine::shaders::pass_plans picks it when a
//   planes matvec reads `out` next): as `row_slices`, and writes its columns of the row as
//   activation planes too, so that matvec skips its `quantize` dispatch.

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
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> residual_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> planes: array<vec4<u32>>;

// residual_out = residual + x over the row starting at `base`; returns 1 / rms of the new row.
// Must be called from workgroup-uniform control flow. Four elements per step with all loads
// first: a 4096-wide row costs each thread 4 memory round trips instead of 16. Indices past the
// row are clamped for the loads and skipped for the stores.
fn add_residual(base: u32, lid: u32) -> f32 {
    var squares = 0.0;
    let last = base + p.n_cols - 1u;
    for (var c0 = base + lid; c0 <= last; c0 += 1024u) {
        let i1 = min(c0 + 256u, last);
        let i2 = min(c0 + 512u, last);
        let i3 = min(c0 + 768u, last);
        let v0 = residual[c0] + x[c0];
        let v1 = residual[i1] + x[i1];
        let v2 = residual[i2] + x[i2];
        let v3 = residual[i3] + x[i3];
        residual_out[c0] = v0;
        squares += v0 * v0;
        if (c0 + 256u <= last) {
            residual_out[i1] = v1;
            squares += v1 * v1;
        }
        if (c0 + 512u <= last) {
            residual_out[i2] = v2;
            squares += v2 * v2;
        }
        if (c0 + 768u <= last) {
            residual_out[i3] = v3;
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
    // Same element-to-thread mapping as add_residual (each thread re-reads only what it wrote),
    // four loads of each array in flight per step.
    for (var c0 = base + lid; c0 <= last; c0 += 1024u) {
        let i1 = min(c0 + 256u, last);
        let i2 = min(c0 + 512u, last);
        let i3 = min(c0 + 768u, last);
        let r0 = residual_out[c0];
        let r1 = residual_out[i1];
        let r2 = residual_out[i2];
        let r3 = residual_out[i3];
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

// The one-row entries' common part: quarter (4 columns) `q` of the row is residual_out's new
// value `v` (`live` false past the row); every workgroup sums the squares of the whole row,
// thread t taking quarters t, t + 256, t + 512, t + 768 per step with all their loads first
// (a 4096-wide row: one memory round trip).
struct RowQuarter {
    live: bool,
    q: u32,
    v: vec4<f32>,
    inv_rms: f32,
}

fn new_residual_quarter(j: u32) -> vec4<f32> {
    let i = 4u * j;
    return vec4<f32>(residual[i], residual[i + 1u], residual[i + 2u], residual[i + 3u])
        + vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

fn row_quarter(wg: u32, lid: u32) -> RowQuarter {
    let quarters = p.n_cols / 4u;
    let q = wg * 256u + lid;
    var own = vec4<f32>(0.0);
    var squares = 0.0;
    for (var j0 = lid; j0 < quarters; j0 += 1024u) {
        let j = vec4<u32>(j0, j0 + 256u, j0 + 512u, j0 + 768u);
        let jc = min(j, vec4<u32>(quarters - 1u));
        let v0 = new_residual_quarter(jc.x);
        let v1 = new_residual_quarter(jc.y);
        let v2 = new_residual_quarter(jc.z);
        let v3 = new_residual_quarter(jc.w);
        let live = j < vec4<u32>(quarters);
        squares += dot(v0, v0);
        squares += select(0.0, dot(v1, v1), live.y);
        squares += select(0.0, dot(v2, v2), live.z);
        squares += select(0.0, dot(v3, v3), live.w);
        own = select(own, v0, j.x == q);
        own = select(own, v1, j.y == q);
        own = select(own, v2, j.z == q);
        own = select(own, v3, j.w == q);
    }
    let mean_square = workgroup_sum(squares, lid) / f32(p.n_cols);
    return RowQuarter(q < quarters, q, own, 1.0 / sqrt(mean_square + p.eps));
}

// Writes quarter `r.q`'s residual_out and out; returns its out values (zero past the row).
fn write_row_quarter_outputs(r: RowQuarter) -> vec4<f32> {
    if (!r.live) {
        return vec4<f32>(0.0);
    }
    let i = 4u * r.q;
    let y = vec4<f32>(weight[i], weight[i + 1u], weight[i + 2u], weight[i + 3u]) * (r.v * r.inv_rms);
    residual_out[i] = r.v.x;
    residual_out[i + 1u] = r.v.y;
    residual_out[i + 2u] = r.v.z;
    residual_out[i + 3u] = r.v.w;
    out[i] = y.x;
    out[i + 1u] = y.y;
    out[i + 2u] = y.z;
    out[i + 3u] = y.w;
    return y;
}

@compute @workgroup_size(256)
fn row_slices(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    write_row_quarter_outputs(row_quarter(wid.x, lid));
}

// `row_slices`, then the planes of the workgroup's columns: four threads per 16-element group,
// their (max, sum) exchanged in workgroup memory. `out` gets the same values as from
// `row_slices`; the planes are those `quantize` would write from `out`.
@compute @workgroup_size(256)
fn planes_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = row_quarter(wid.x, lid);
    let y = write_row_quarter_outputs(r);
    write_row_quarter(lid, r.live, p.n_cols / GROUP_ELEMENTS, r.q, y);
}
