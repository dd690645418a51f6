// Q4_K in the packed SoA layout: segments `dm_scales` (4 words per block: d and dmin as an f16 pair,
// then the 12 scale bytes) and `qs` (32 words per block). Super-block of 256 = 8 sub-blocks of 32; sub-blocks 2c and
// 2c+1 share qs bytes 32c .. 32c+31 (low nibbles, then high). x = (d * sc) * q - (dmin * m).
#include "common/dq8.wgsl"
#include "common/k_scales.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 256u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 32u;
    let g = group % 32u;
    let j = g / 4u;
    let block_meta = block * 4u;
    let dm = unpack2x16float(weights[block_meta]);
    let scale_min = k_scale_min(weights[block_meta + 1u], weights[block_meta + 2u], weights[block_meta + 3u], j);
    let d_scale = dm.x * f32(scale_min.x);
    let d_min = dm.y * f32(scale_min.y);
    let word = segment_words(16u * n_blocks) + block * 32u + (j / 2u) * 8u + (g % 4u) * 2u;
    let shift = (j % 2u) * 4u;
    let q0 = (bytes4(weights[word]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let q1 = (bytes4(weights[word + 1u]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    return Dq8(d_scale * vec4<f32>(q0) - d_min, d_scale * vec4<f32>(q1) - d_min);
}
