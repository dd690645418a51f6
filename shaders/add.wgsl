// add: Add -- a += b, elementwise.
//
// Bindings (group 0):
//   0 uniform ElementwiseParams { n }
//   1 b: array<f32>                  [n]
//   2 a: array<f32> (read_write)     [n]
// Dispatch: workgroup_size 256, one thread per element; ceil(n / 256) workgroups folded into
//   (x <= 65535, y).

#include "common/grid.wgsl"

struct ElementwiseParams {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> a: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    a[i] += b[i];
}
