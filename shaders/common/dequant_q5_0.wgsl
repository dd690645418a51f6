// Q5_0 in the packed SoA layout: segments `d` (f16 per block, padded), `qh` (1 word per block),
// `qs` (4 words per block); x = d * (q - 16).
#include "common/dq8.wgsl"
#include "common/q5_bits.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 32u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 4u;
    let g = group % 4u;
    let d = f16_at(weights[block / 2u], block % 2u);
    let qh_seg = segment_words(2u * n_blocks);
    let qs_seg = qh_seg + segment_words(4u * n_blocks);
    let word = qs_seg + block * 4u + (g % 2u) * 2u;
    let q = q5_values(weights[word], weights[word + 1u], weights[qh_seg + block], g);
    return Dq8(d * (vec4<f32>(q[0]) - 16.0), d * (vec4<f32>(q[1]) - 16.0));
}
