// kv_write: KvWrite -- appends this pass's keys and values to the KV cache:
// k_cache[pos_offset + t] = k[t], v_cache[pos_offset + t] = v[t].
//
// Bindings (group 0):
//   0 uniform KvWriteParams { n_tokens, kv_dim, pos_offset }
//   1 k: array<f32>                        [n_tokens, kv_dim]
//   2 v: array<f32>                        [n_tokens, kv_dim]
//   3 k_cache: array<f32> (read_write)     [ctx, kv_dim]
//   4 v_cache: array<f32> (read_write)     [ctx, kv_dim]
// Dispatch: workgroup_size 256, one thread per element; ceil(n_tokens * kv_dim / 256)
//   workgroups folded into (x <= 65535, y).

#include "common/grid.wgsl"

struct KvWriteParams {
    n_tokens: u32,
    kv_dim: u32,
    pos_offset: u32,
}

@group(0) @binding(0) var<uniform> p: KvWriteParams;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_workgroup(wid, nwg) * 256u + lid;
    if (i >= p.n_tokens * p.kv_dim) {
        return;
    }
    let dst = p.pos_offset * p.kv_dim + i;
    k_cache[dst] = k[i];
    v_cache[dst] = v[i];
}
