// rope_kv_write_neox: RopeKvWriteNeox -- splits the fused q|k|v projection rows of this pass: each q and
// k head is RMS-normalised first when qk_norm is set (qwen3), then rotated by angle
// (pos_offset + t) * inv_freq[i] from the precomputed table, NeoX / HF "rotate_half" pairing: element i rotates with element i + head_dim / 2;
// q heads go to the attention input, k and v heads to row pos_offset + t of the KV cache.
// One dispatch instead of up to five (q/k norms, two RoPEs, the KV write).
//
// Bindings (group 0):
//   0 uniform RopeKvWriteParams { n_tokens, n_heads, n_kv_heads, head_dim, pos_offset, qk_norm, eps }
//   1 table: array<f32>                    [ctx, head_dim / 2, 2] (cos, sin), ctx >= pos_offset + n_tokens
//   2 qkv: array<f32>                      [n_tokens, (n_heads + 2 n_kv_heads) * head_dim]
//   3 q_norm: array<f32>                   [head_dim] (a placeholder when qk_norm = 0)
//   4 k_norm: array<f32>                   [head_dim] (a placeholder when qk_norm = 0)
//   5 q_out: array<f32> (read_write)       [n_tokens, n_heads, head_dim]
//   6 k_cache: array<f32> (read_write)     [ctx, n_kv_heads * head_dim]
//   7 v_cache: array<f32> (read_write)     [ctx, n_kv_heads * head_dim]
// Dispatch: workgroup_size 64, one workgroup per (token, head): n_tokens * (n_heads +
//   2 n_kv_heads) workgroups folded into (x <= 65535, y).

#include "common/rope_kv_write_body.wgsl"

fn pair(i: u32, half_dim: u32) -> vec2<u32> {
    return vec2<u32>(i, i + half_dim);
}
