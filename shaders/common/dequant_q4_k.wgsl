// Q4_K in the packed SoA layout: segments `dm` (d, dmin: 1 word per block), `scales` (3 words per
// block), `qs` (32 words per block). Super-block of 256 = 8 sub-blocks of 32; sub-blocks 2c and
// 2c+1 share qs bytes 32c .. 32c+31 (low nibbles, then high). x = (d * sc) * q - (dmin * m).
#include "common/dq8.wgsl"
#include "common/k_scales.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 256u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 32u;
    let g = group % 32u;
    let j = g / 4u;
    let dm = unpack2x16float(weights[block]);
    let sc_seg = segment_words(4u * n_blocks);
    let sc = sc_seg + block * 3u;
    let scale_min = k_scale_min(weights[sc], weights[sc + 1u], weights[sc + 2u], j);
    let d_scale = dm.x * f32(scale_min.x);
    let d_min = dm.y * f32(scale_min.y);
    let word = sc_seg + segment_words(12u * n_blocks) + block * 32u + (j / 2u) * 8u + (g % 4u) * 2u;
    let shift = (j % 2u) * 4u;
    let q0 = (bytes4(weights[word]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let q1 = (bytes4(weights[word + 1u]) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    return Dq8(d_scale * vec4<f32>(q0) - d_min, d_scale * vec4<f32>(q1) - d_min);
}
