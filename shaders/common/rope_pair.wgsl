// One head of a fused q|k|v row through the qwen3 norm and RoPE, shared by rope_kv_write_body.wgsl
// and rope_attention_decode.wgsl (which declare `qkv`, `table`, `q_norm`, `k_norm` and `p` with
// head_dim, qk_norm and eps).

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

var<workgroup> head_parts: array<f32, 256>;

// Sum over the workgroup of `threads` (64 or 256) threads; uniform control flow.
fn head_sum(value: f32, lid: u32, threads: u32) -> f32 {
    head_parts[lid] = value;
    workgroupBarrier();
    for (var stride = threads / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            head_parts[lid] += head_parts[lid + stride];
        }
        workgroupBarrier();
    }
    let total = head_parts[0];
    workgroupBarrier();
    return total;
}

// 1 / rms of the head at qkv[src ..], or 1 without qk_norm.
fn head_inv_rms(src: u32, lid: u32, threads: u32) -> f32 {
    if (p.qk_norm == 0u) {
        return 1.0;
    }
    var squares = 0.0;
    for (var e = lid; e < p.head_dim; e += threads) {
        let v = qkv[src + e];
        squares += v * v;
    }
    return 1.0 / sqrt(head_sum(squares, lid, threads) / f32(p.head_dim) + p.eps);
}
