// The f32 Q6_K pair matvec (matvec_q6_k.wgsl; also the small-matrix path of
// matvec_planes_q6_k.wgsl). Needs common/matvec_rows.wgsl.
//
// Work split: `lanes` threads per pair of rows (thread t works on rows 2(t / lanes) and the next),
// each taking 16-byte slots of both rows with the activations loaded once. A super-block's 128 ql bytes are 8 slots of 16 bytes. Slot t = 4 half + u holds the
// low 4 bits of elements 128 half + 16u + (0..15) (low nibbles) and of the same + 64 (high
// nibbles); their top 2 bits are in qh bytes 32 half + 16 (u % 2) + (0..15), at bit 2 (u / 2) and
// 4 + 2 (u / 2). Each 16 elements share one signed scale: x = d * scale * (q - 32).

// One row's weights of slot `slot` (0..7) of `block`: its ql bytes, the matching qh bytes, the
// block's 16 signed scales and its scale d (segments ql | qh | scales | d of `n_blocks` blocks).
struct Q6Slot {
    ql: vec4<u32>,
    qh: vec4<u32>,
    scales: vec4<u32>,
    d: f32,
}

fn q6_slot(block: u32, slot: u32, n_blocks: u32) -> Q6Slot {
    let qh_slot = (slot / 4u) * 2u + slot % 2u;
    return Q6Slot(weights[block * 8u + slot], weights[8u * n_blocks + block * 4u + qh_slot], weights[12u * n_blocks + block],
        unpack2x16float(word_at(52u * n_blocks + block / 2u))[block % 2u]);
}

// One row's share of slot `s` (0..7 of its block): `w` its weights, v the activations (lo:
// elements 16u.., hi: the same + 64).
fn slot_dot_f32(w: Q6Slot, s: u32, v: XBlock, sum_lo: f32, sum_hi: f32) -> f32 {
    let half_index = s / 4u;
    let u = s % 4u;
    let shift_lo = 2u * (u / 2u);
    let shift_hi = shift_lo + 4u;
    let dot_lo = (dot(small_to_f32(byte_fields(w.ql.x, 0u, 0xfu) | (byte_fields(w.qh.x, shift_lo, 3u) << vec4<u32>(4u))), v.lo0)
        + dot(small_to_f32(byte_fields(w.ql.y, 0u, 0xfu) | (byte_fields(w.qh.y, shift_lo, 3u) << vec4<u32>(4u))), v.lo1))
        + (dot(small_to_f32(byte_fields(w.ql.z, 0u, 0xfu) | (byte_fields(w.qh.z, shift_lo, 3u) << vec4<u32>(4u))), v.lo2)
        + dot(small_to_f32(byte_fields(w.ql.w, 0u, 0xfu) | (byte_fields(w.qh.w, shift_lo, 3u) << vec4<u32>(4u))), v.lo3));
    let dot_hi = (dot(small_to_f32(byte_fields(w.ql.x, 4u, 0xfu) | (byte_fields(w.qh.x, shift_hi, 3u) << vec4<u32>(4u))), v.hi0)
        + dot(small_to_f32(byte_fields(w.ql.y, 4u, 0xfu) | (byte_fields(w.qh.y, shift_hi, 3u) << vec4<u32>(4u))), v.hi1))
        + (dot(small_to_f32(byte_fields(w.ql.z, 4u, 0xfu) | (byte_fields(w.qh.z, shift_hi, 3u) << vec4<u32>(4u))), v.hi2)
        + dot(small_to_f32(byte_fields(w.ql.w, 4u, 0xfu) | (byte_fields(w.qh.w, shift_hi, 3u) << vec4<u32>(4u))), v.hi3));
    let scale_lo = signed_byte(w.scales, 8u * half_index + u);
    let scale_hi = signed_byte(w.scales, 8u * half_index + 4u + u);
    return w.d * (scale_lo * (dot_lo - 32.0 * sum_lo) + scale_hi * (dot_hi - 32.0 * sum_hi));
}

fn matvec_pairs_f32(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    let x_row4 = p.x_row * (p.k / 4u);
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    let slots = blocks_per_row * 8u;
    for (var s = tid % lanes; s < slots; s += lanes) {
        let b = s / 8u;
        let slot = s % 8u;
        let wa = q6_slot(rows.x + b, slot, n_blocks);
        let wb = q6_slot(rows.y + b, slot, n_blocks);
        let xi = x_row4 + b * 64u + (slot / 4u) * 32u + (slot % 4u) * 4u;
        let v = XBlock(x[xi], x[xi + 1u], x[xi + 2u], x[xi + 3u], x[xi + 16u], x[xi + 17u], x[xi + 18u], x[xi + 19u]);
        let sum_lo = horizontal_sum((v.lo0 + v.lo1) + (v.lo2 + v.lo3));
        let sum_hi = horizontal_sum((v.hi0 + v.hi1) + (v.hi2 + v.hi3));
        sum_a += slot_dot_f32(wa, slot, v, sum_lo, sum_hi);
        sum_b += slot_dot_f32(wb, slot, v, sum_lo, sum_hi);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
