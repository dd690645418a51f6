// swiglu: SwiGlu -- out[t][j] = silu(g) * u = g / (1 + exp(-g)) * u with g = gate_up[t][j] and
// u = gate_up[t][width + j]: the gate and up projections run as one fused matmul whose rows hold
// the gate half first.
//
// Bindings (group 0):
//   0 uniform SwiGluParams { n_tokens, width }
//   1 gate_up: array<f32>            [n_tokens, 2 * width]
//   2 out: array<f32> (read_write)   [n_tokens, width]
// Dispatch: workgroup_size 256, one thread per output element; ceil(n_tokens * width / 256)
//   workgroups folded into (x <= 65535, y).

#include "common/grid.wgsl"

struct SwiGluParams {
    n_tokens: u32,
    width: u32,
}

@group(0) @binding(0) var<uniform> p: SwiGluParams;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= p.n_tokens * p.width) {
        return;
    }
    let t = i / p.width;
    let g = gate_up[i + t * p.width];
    out[i] = g / (1.0 + exp(-g)) * gate_up[i + (t + 1u) * p.width];
}
