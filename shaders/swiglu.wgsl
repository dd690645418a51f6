// swiglu: SwiGlu -- out[t][j] = silu(g) * u = g / (1 + exp(-g)) * u with g = gate_up[t][j] and
// u = gate_up[t][width + j]: the gate and up projections run as one fused matmul whose rows hold
// the gate half first.
//
// Bindings (group 0):
//   0 uniform SwiGluParams { n_tokens, width }
//   1 gate_up: array<f32>            [n_tokens, 2 * width]
//   2 out: array<f32> (read_write)   [n_tokens, width]
//   3 planes: array<vec4<u32>> (read_write; `planes_main` only: the device scratch, common/planes.wgsl)
// Dispatch: workgroup_size 256, one thread per output element; ceil(n_tokens * width / 256)
//   workgroups folded into (x <= 65535, y). `planes_main` (one token, width a multiple of 16;
//   engine::shaders::pass_plans picks it when a planes matvec reads `out` next) also writes the
//   row as activation planes, so that matvec skips its `quantize` dispatch: four threads per
//   16-element group, ceil(width / 1024) workgroups of 256.

#include "common/grid.wgsl"
#include "common/planes.wgsl"

struct SwiGluParams {
    n_tokens: u32,
    width: u32,
}

@group(0) @binding(0) var<uniform> p: SwiGluParams;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> planes: array<vec4<u32>>;

fn silu_times(g: f32, u: f32) -> f32 {
    return g / (1.0 + exp(-g)) * u;
}

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
    out[i] = silu_times(g, gate_up[i + (t + 1u) * p.width]);
}

// Four threads per 16-element group (one vec4 each), their (max, sum) exchanged in workgroup
// memory; `out` gets the same values as from `main`.
@compute @workgroup_size(256)
fn planes_main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let quarters = p.width / 4u;
    let q = linear_workgroup(wid, nwg) * 256u + lid;
    let live = q < quarters;
    var v = vec4<f32>(0.0);
    if (live) {
        let i = 4u * q;
        let u = i + p.width;
        let g = vec4<f32>(gate_up[i], gate_up[i + 1u], gate_up[i + 2u], gate_up[i + 3u]);
        // silu_times per lane, in the same operation order.
        v = g / (vec4<f32>(1.0) + exp(-g)) * vec4<f32>(gate_up[u], gate_up[u + 1u], gate_up[u + 2u], gate_up[u + 3u]);
        out[i] = v.x;
        out[i + 1u] = v.y;
        out[i + 2u] = v.z;
        out[i + 3u] = v.w;
    }
    write_row_quarter(lid, live, p.width / GROUP_ELEMENTS, q, v);
}
