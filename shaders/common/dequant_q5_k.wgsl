// Q5_K in the packed SoA layout: segments `dm` (1 word per block), `scales` (3 words), `qh`
// (8 words), `qs` (32 words). As Q4_K, plus bit j of qh byte l as bit 4 of element l of
// sub-block j. x = (d * sc) * q - (dmin * m).
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
    // Element l = 8 * (g % 4) + e of sub-block j: qh byte l, bit j.
    let qh_seg = sc_seg + segment_words(12u * n_blocks);
    let qh = qh_seg + block * 8u + (g % 4u) * 2u;
    let h0 = ((bytes4(weights[qh]) >> vec4<u32>(j)) & vec4<u32>(1u)) << vec4<u32>(4u);
    let h1 = ((bytes4(weights[qh + 1u]) >> vec4<u32>(j)) & vec4<u32>(1u)) << vec4<u32>(4u);
    let word = qh_seg + 8u * n_blocks + block * 32u + (j / 2u) * 8u + (g % 4u) * 2u;
    let shift = (j % 2u) * 4u;
    let q0 = ((bytes4(weights[word]) >> vec4<u32>(shift)) & vec4<u32>(0xfu)) | h0;
    let q1 = ((bytes4(weights[word + 1u]) >> vec4<u32>(shift)) & vec4<u32>(0xfu)) | h1;
    return Dq8(d_scale * vec4<f32>(q0) - d_min, d_scale * vec4<f32>(q1) - d_min);
}
