// Q6_K in the packed SoA layout: segments `ql` (32 words per block), `qh` (16 words), `scales`
// (16 signed bytes = 4 words), `d` (f16 per block, padded). Element i: half = i / 128, r = i % 128;
// low 4 bits = nibble (r / 64) of ql[64 half + r % 64], high 2 bits = bits 2 (r / 32) of
// qh[32 half + r % 32]; x = (d * scales[i / 16]) * (q - 32).
#include "common/dq8.wgsl"

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let blocks_per_row = k / 256u;
    let n_blocks = rows * blocks_per_row;
    let block = row * blocks_per_row + group / 32u;
    let g = group % 32u;
    let half_index = g / 16u;
    let r = (g % 16u) * 8u;
    let ql = block * 32u + (64u * half_index + r % 64u) / 4u;
    let low_shift = (r / 64u) * 4u;
    let qh = 32u * n_blocks + block * 16u + (32u * half_index + r % 32u) / 4u;
    let high_shift = (r / 32u) * 2u;
    let q0 = ((bytes4(weights[ql]) >> vec4<u32>(low_shift)) & vec4<u32>(0xfu))
        | (((bytes4(weights[qh]) >> vec4<u32>(high_shift)) & vec4<u32>(3u)) << vec4<u32>(4u));
    let q1 = ((bytes4(weights[ql + 1u]) >> vec4<u32>(low_shift)) & vec4<u32>(0xfu))
        | (((bytes4(weights[qh + 1u]) >> vec4<u32>(high_shift)) & vec4<u32>(3u)) << vec4<u32>(4u));
    // Scale index i / 16 = g / 2: one signed byte of the scales segment.
    let scale_byte = block * 16u + g / 2u;
    let scale_word = weights[48u * n_blocks + scale_byte / 4u];
    let scale = f32((bitcast<i32>(scale_word) << (24u - 8u * (scale_byte % 4u))) >> 24u);
    let d = f16_at(weights[52u * n_blocks + block / 2u], block % 2u);
    let d_scale = d * scale;
    return Dq8(d_scale * (vec4<f32>(q0) - 32.0), d_scale * (vec4<f32>(q1) - 32.0));
}
