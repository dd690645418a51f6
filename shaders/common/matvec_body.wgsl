// Body of matvec_<format>.wgsl: y = W x (+ b) for one activation row, weights dequantized on the
// fly 8 at a time. 64 threads = 4 rows x 16 lanes; each lane strides over the row's 8-element
// groups, then the 16 lanes of a row reduce through workgroup memory.
#include "common/grid.wgsl"
#include "common/matmul_params.wgsl"

const WORKGROUP: u32 = 64u;
const LANES_PER_ROW: u32 = 16u;
const ROWS_PER_WORKGROUP: u32 = 4u;

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
