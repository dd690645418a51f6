// Q5_1 in the packed SoA layout: segments `dm` (1 word per block), `qh` (1 word per block), `qs`
// (4 words per block); x = d * q + m.
#include "common/dq8.wgsl"
#include "common/q5_bits.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 32u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 4u;
    let g = group % 4u;
    let dm = unpack2x16float(weights[block]);
    let qh_seg = segment_words(4u * n_blocks);
    let word = 2u * qh_seg + block * 4u + (g % 2u) * 2u;
    let q = q5_values(weights[word], weights[word + 1u], weights[qh_seg + block], g);
    return Dq8(dm.x * vec4<f32>(q[0]) + dm.y, dm.x * vec4<f32>(q[1]) + dm.y);
}
