// Body of matvec_<format>.wgsl: y = W x (+ b) for one activation row, weights dequantized on the
// fly 8 at a time. 64 threads = 2 rows x 32 lanes (a warp-sized group per row, so consecutive
// lanes read consecutive 8-element groups and one row's loads cover whole packed blocks); each
// lane strides over the row's groups, then the 32 lanes of a row reduce through workgroup memory.
// ROWS_PER_WORKGROUP must match engine::shaders::MATVEC_ROWS_PER_WORKGROUP.
#include "common/grid.wgsl"
#include "common/matmul_params.wgsl"

const WORKGROUP: u32 = 64u;
const LANES_PER_ROW: u32 = 32u;
const ROWS_PER_WORKGROUP: u32 = 2u;

var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg) * ROWS_PER_WORKGROUP + lid / LANES_PER_ROW;
    let lane = lid % LANES_PER_ROW;
    var acc = 0.0;
    if (row < p.n) {
        let groups = (p.k + 7u) / 8u;
        let x_base = p.x_row * p.k;
        for (var g = lane; g < groups; g += LANES_PER_ROW) {
            let w = dequant8(row, g, p.n, p.k);
            let v = load_x8(x_base, g, p.k);
            acc += dot(w.lo, v.lo) + dot(w.hi, v.hi);
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var stride = LANES_PER_ROW / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.n) {
        var y = partial[lid];
        if (p.has_bias != 0u) {
            y += bias[row];
        }
        out[p.out_col + row] = y;
    }
}

// One thread per row (64 rows per workgroup), for the GPU simulator (sim/src/device.rs picks
// it; the GPU never does): its warps are a CPU core's SIMD lanes, so a whole row per lane needs
// no reduction and leaves no lane idle, and every lane reads the same activations at once.
@compute @workgroup_size(64)
fn sim_row_per_thread(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (row >= p.n) {
        return;
    }
    let groups = (p.k + 7u) / 8u;
    let x_base = p.x_row * p.k;
    var acc = 0.0;
    for (var g = 0u; g < groups; g++) {
        let w = dequant8(row, g, p.n, p.k);
        let v = load_x8(x_base, g, p.k);
        acc += dot(w.lo, v.lo) + dot(w.hi, v.hi);
    }
    if (p.has_bias != 0u) {
        acc += bias[row];
    }
    out[p.out_col + row] = acc;
}
