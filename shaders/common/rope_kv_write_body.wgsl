// Body of rope_kv_write_neox.wgsl / rope_kv_write_interleaved.wgsl; the including file defines
// `fn pair(i: u32, half_dim: u32) -> vec2<u32>`, the two elements of a head rotated by
// frequency i.
#include "common/grid.wgsl"
#include "common/rope_pair.wgsl"

struct RopeKvWriteParams {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos_offset: u32,
    qk_norm: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: RopeKvWriteParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;           // [ctx, head_dim / 2, 2] (cos, sin)
@group(0) @binding(2) var<storage, read> qkv: array<f32>;             // [n_tokens, (n_heads + 2 n_kv_heads) * head_dim]
@group(0) @binding(3) var<storage, read> q_norm: array<f32>;          // [head_dim] (placeholder without qk_norm)
@group(0) @binding(4) var<storage, read> k_norm: array<f32>;          // [head_dim] (placeholder without qk_norm)
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;     // [n_tokens, n_heads, head_dim]
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;   // [ctx, n_kv_heads * head_dim]
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;   // [ctx, n_kv_heads * head_dim]

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // One workgroup per (token, head) of the qkv row: q heads, then k heads, then v heads. Every
    // branch below depends only on the workgroup, so it is uniform.
    let heads_per_row = p.n_heads + 2u * p.n_kv_heads;
    let head_row = linear_workgroup(wid, nwg);
    if (head_row >= p.n_tokens * heads_per_row) {
        return;
    }
    let t = head_row / heads_per_row;
    let h = head_row % heads_per_row;
    let d = p.head_dim;
    let src = head_row * d;
    let kv_dim = p.n_kv_heads * d;
    let cache_row = (p.pos_offset + t) * kv_dim;
    if (h >= p.n_heads + p.n_kv_heads) {
        let dst = cache_row + (h - p.n_heads - p.n_kv_heads) * d;
        for (var e = lid; e < d; e += 64u) {
            v_cache[dst + e] = qkv[src + e];
        }
        return;
    }
    let is_q = h < p.n_heads;
    let inv = head_inv_rms(src, lid, 64u);
    let half_dim = d / 2u;
    let angles = (p.pos_offset + t) * d;
    for (var i = lid; i < half_dim; i += 64u) {
        let ab = pair(i, half_dim);
        let r = rotated_pair(src, i, ab, angles, inv, is_q);
        if (is_q) {
            let dst = (t * p.n_heads + h) * d;
            q_out[dst + ab.x] = r.x;
            q_out[dst + ab.y] = r.y;
        } else {
            let dst = cache_row + (h - p.n_heads) * d;
            k_cache[dst + ab.x] = r.x;
            k_cache[dst + ab.y] = r.y;
        }
    }
}
