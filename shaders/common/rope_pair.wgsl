// One RoPE pair of a head in a fused q|k|v row, shared by rope_kv_write_body.wgsl and
// rope_attention_decode.wgsl (which declare `qkv`, `table`, `q_norm`, `k_norm` and `p.qk_norm`).

// Elements `ab` of the head at qkv[src ..], RMS-normalised with the q or k norm weight when
// p.qk_norm (the reference's order: weight * (x * inv)), then rotated by pair i's angle from
// row `angles` of the cos/sin table.
fn rotated_pair(src: u32, i: u32, ab: vec2<u32>, angles: u32, inv: f32, is_q: bool) -> vec2<f32> {
    var x0 = qkv[src + ab.x];
    var x1 = qkv[src + ab.y];
    if (p.qk_norm != 0u) {
        if (is_q) {
            x0 = q_norm[ab.x] * (x0 * inv);
            x1 = q_norm[ab.y] * (x1 * inv);
        } else {
            x0 = k_norm[ab.x] * (x0 * inv);
            x1 = k_norm[ab.y] * (x1 * inv);
        }
    }
    let cos_a = table[angles + 2u * i];
    let sin_a = table[angles + 2u * i + 1u];
    return vec2<f32>(x0 * cos_a - x1 * sin_a, x1 * cos_a + x0 * sin_a);
}
