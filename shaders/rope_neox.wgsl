// rope_neox: RopeNeox -- in-place rotary embedding, NeoX / HF "rotate_half" pairing: element i
// rotates with element i + head_dim / 2, by angle (pos_offset + t) * inv_freq[i] read from the
// precomputed table.
//
// Bindings (group 0):
//   0 uniform RopeParams { n_tokens, n_heads, head_dim, pos_offset }
//   1 table: array<f32>              [ctx, head_dim / 2, 2] (cos, sin), ctx >= pos_offset + n_tokens
//   2 x: array<f32> (read_write)     [n_tokens, n_heads, head_dim]
// Dispatch: workgroup_size 256, one thread per rotated pair; ceil(n_tokens * n_heads *
//   head_dim / 2 / 256) workgroups folded into (x <= 65535, y).

#include "common/rope_body.wgsl"

fn pair(i: u32, half_dim: u32) -> vec2<u32> {
    return vec2<u32>(i, i + half_dim);
}
