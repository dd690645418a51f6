// The f32 Q4_K pair matvec (matvec_q4_k.wgsl; also the small-matrix path of
// matvec_planes_q4_k.wgsl). Needs common/matvec_rows.wgsl and common/k_scales.wgsl.
//
// Work split: `lanes` threads per pair of rows (thread t works on rows 2(t / lanes) and the next),
// each taking 16-byte slots of both rows with the activations loaded once. A super-block's 128 qs
// bytes are 8 slots of 16 bytes. Slot t holds bytes 32c + 16h .. +15 (c = t / 2, h = t % 2): low
// nibbles are elements 16h.. of sub-block 2c, high nibbles the same elements of sub-block 2c + 1.
// Per sub-block the weight is d*sc*q - dmin*m, so a slot needs sum(q x) and sum(x) per sub-block;
// sum(x) is shared by both rows.

// One row's share of a slot: `q` its 16 qs bytes, `block_meta` its block's (d, dmin) and scales,
// `c` the sub-block pair, v the slot's activations (lo: sub-block 2c, hi: 2c + 1).
fn slot_dot_f32(q: vec4<u32>, block_meta: vec4<u32>, c: u32, v: XBlock, sum_lo: f32, sum_hi: f32) -> f32 {
    let dm = unpack2x16float(block_meta.x);
    let lo = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c);
    let hi = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c + 1u);
    let dot_lo = (dot(small_to_f32(byte_fields(q.x, 0u, 0xfu)), v.lo0) + dot(small_to_f32(byte_fields(q.y, 0u, 0xfu)), v.lo1))
        + (dot(small_to_f32(byte_fields(q.z, 0u, 0xfu)), v.lo2) + dot(small_to_f32(byte_fields(q.w, 0u, 0xfu)), v.lo3));
    let dot_hi = (dot(small_to_f32(byte_fields(q.x, 4u, 0xfu)), v.hi0) + dot(small_to_f32(byte_fields(q.y, 4u, 0xfu)), v.hi1))
        + (dot(small_to_f32(byte_fields(q.z, 4u, 0xfu)), v.hi2) + dot(small_to_f32(byte_fields(q.w, 4u, 0xfu)), v.hi3));
    return dm.x * (f32(lo.x) * dot_lo + f32(hi.x) * dot_hi) - dm.y * (f32(lo.y) * sum_lo + f32(hi.y) * sum_hi);
}

fn matvec_pairs_f32(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    // dm_scales: one vec4 per block (d/dmin pair, 3 scale words); qs: 8 vec4 per block.
    let qs_seg4 = n_blocks;
    let x_row4 = p.x_row * (p.k / 4u);
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    let slots = blocks_per_row * 8u;
    for (var s = tid % lanes; s < slots; s += lanes) {
        let b = s / 8u;
        let c = (s % 8u) / 2u;
        let qa = weights[qs_seg4 + (rows.x + b) * 8u + s % 8u];
        let qb = weights[qs_seg4 + (rows.y + b) * 8u + s % 8u];
        let meta_a = weights[rows.x + b];
        let meta_b = weights[rows.y + b];
        let xi = x_row4 + b * 64u + c * 16u + (s % 2u) * 4u;
        let v = XBlock(x[xi], x[xi + 1u], x[xi + 2u], x[xi + 3u], x[xi + 8u], x[xi + 9u], x[xi + 10u], x[xi + 11u]);
        let sum_lo = horizontal_sum((v.lo0 + v.lo1) + (v.lo2 + v.lo3));
        let sum_hi = horizontal_sum((v.hi0 + v.hi1) + (v.hi2 + v.hi3));
        sum_a += slot_dot_f32(qa, meta_a, c, v, sum_lo, sum_hi);
        sum_b += slot_dot_f32(qb, meta_b, c, v, sum_lo, sum_hi);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
