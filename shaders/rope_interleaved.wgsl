// rope_interleaved: RopeInterleaved -- in-place rotary embedding, GPT-J pairing: elements 2i and
// 2i + 1 rotate together (llama-arch GGUFs store q/k rows permuted for this), by angle
// (pos_offset + t) * inv_freq[i] read from the precomputed table.
//
// Bindings (group 0):
//   0 uniform RopeParams { n_tokens, n_heads, head_dim, pos_offset }
//   1 table: array<f32>              [ctx, head_dim / 2, 2] (cos, sin), ctx >= pos_offset + n_tokens
//   2 x: array<f32> (read_write)     [n_tokens, n_heads, head_dim]
// Dispatch: workgroup_size 256, one thread per rotated pair; ceil(n_tokens * n_heads *
//   head_dim / 2 / 256) workgroups folded into (x <= 65535, y).

#include "common/rope_body.wgsl"

fn pair(i: u32, half_dim: u32) -> vec2<u32> {
    return vec2<u32>(2u * i, 2u * i + 1u);
}
