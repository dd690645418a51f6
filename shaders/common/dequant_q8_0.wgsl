// Q8_0 in the packed SoA layout: segment `d` (f16 per block, padded), then `qs` (32 signed bytes =
// 8 words per block); x = q * d.
#include "common/dq8.wgsl"

// The four bytes of a word as signed values (sign-extended by an arithmetic shift).
fn sbytes4(word: u32) -> vec4<f32> {
    let w = vec4<i32>(bitcast<i32>(word));
    return vec4<f32>((w << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 32u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 4u;
    let g = group % 4u;
    let d = f16_at(weights[block / 2u], block % 2u);
    let word = segment_words(2u * n_blocks) + block * 8u + g * 2u;
    return Dq8(sbytes4(weights[word]) * d, sbytes4(weights[word + 1u]) * d);
}
