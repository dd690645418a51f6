// Q4_1 in the packed SoA layout: segment `dm` (one word per block: d low half, m high half), then
// `qs` (4 words per block). Nibble order as Q4_0; x = d * q + m.
#include "common/dq8.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 32u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 4u;
    let g = group % 4u;
    let dm = unpack2x16float(weights[block]);
    let word = segment_words(4u * n_blocks) + block * 4u + (g % 2u) * 2u;
    let shift = (g / 2u) * 4u;
    let q0 = (bytes4(weights[word]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let q1 = (bytes4(weights[word + 1u]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    return Dq8(dm.x * vec4<f32>(q0) + dm.y, dm.x * vec4<f32>(q1) + dm.y);
}
