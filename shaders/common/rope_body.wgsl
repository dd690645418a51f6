// Body of rope_neox.wgsl / rope_interleaved.wgsl; the including file defines
// `fn pair(i: u32, half_dim: u32) -> vec2<u32>`, the two elements rotated by frequency i.
#include "common/grid.wgsl"

struct RopeParams {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    pos_offset: u32,
}

@group(0) @binding(0) var<uniform> p: RopeParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;     // [ctx, head_dim / 2, 2] (cos, sin)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;   // [n_tokens, n_heads, head_dim]

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half_dim = p.head_dim / 2u;
    let index = linear_workgroup(wid, nwg) * 256u + lid;
    if (index >= p.n_tokens * p.n_heads * half_dim) {
        return;
    }
    let i = index % half_dim;
    let head_row = index / half_dim;          // t * n_heads + h
    let t = head_row / p.n_heads;
    let angle = ((p.pos_offset + t) * half_dim + i) * 2u;
    let cos_a = table[angle];
    let sin_a = table[angle + 1u];
    let ab = pair(i, half_dim) + vec2<u32>(head_row * p.head_dim);
    let x0 = x[ab.x];
    let x1 = x[ab.y];
    x[ab.x] = x0 * cos_a - x1 * sin_a;
    x[ab.y] = x1 * cos_a + x0 * sin_a;
}
