// F32 weights: `weights` is the row-major [rows, k] matrix as f32 bits. k may be any size, so
// elements past the row end read as 0 (never the next row).
#include "common/dq8.wgsl"

fn weight_f32(row: u32, col: u32, k: u32) -> f32 {
    if (col >= k) {
        return 0.0;
    }
    return bitcast<f32>(weights[row * k + col]);
}

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let c = group * 8u;
    return Dq8(
        vec4<f32>(weight_f32(row, c, k), weight_f32(row, c + 1u, k), weight_f32(row, c + 2u, k), weight_f32(row, c + 3u, k)),
        vec4<f32>(weight_f32(row, c + 4u, k), weight_f32(row, c + 5u, k), weight_f32(row, c + 6u, k), weight_f32(row, c + 7u, k)),
    );
}
