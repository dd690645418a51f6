// Q4_0 in the packed SoA layout (engine/src/quant.rs): segment `d` (f16 per block, padded to a
// word), then segment `qs` (16 bytes = 4 words per block). Block of 32: element i < 16 is the low
// nibble of qs[i], element i >= 16 the high nibble of qs[i - 16]; x = d * (q - 8).
#include "common/dq8.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 32u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 4u;
    let g = group % 4u;
    let d = f16_at(weights[block / 2u], block % 2u);
    let qs = segment_words(2u * n_blocks) + block * 4u;
    // Groups 0,1 read the low nibbles of bytes 0..15, groups 2,3 the high nibbles.
    let shift = (g / 2u) * 4u;
    let word = qs + (g % 2u) * 2u;
    let q0 = (bytes4(weights[word]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let q1 = (bytes4(weights[word + 1u]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    return Dq8(d * (vec4<f32>(q0) - 8.0), d * (vec4<f32>(q1) - 8.0));
}
