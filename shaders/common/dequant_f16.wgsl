// F16 weights: `weights` holds the row-major [rows, k] halves, two per word (element 2i in the low
// half). k may be odd, so a row can start mid-word; elements past the row end read as 0.
#include "common/dq8.wgsl"

fn weight_f16(row: u32, col: u32, k: u32) -> f32 {
    if (col >= k) {
        return 0.0;
    }
    let index = row * k + col;
    return f16_at(weights[index / 2u], index % 2u);
}

fn dequant8(row: u32, group: u32, rows: u32, k: u32) -> Dq8 {
    let c = group * 8u;
    return Dq8(
        vec4<f32>(weight_f16(row, c, k), weight_f16(row, c + 1u, k), weight_f16(row, c + 2u, k), weight_f16(row, c + 3u, k)),
        vec4<f32>(weight_f16(row, c + 4u, k), weight_f16(row, c + 5u, k), weight_f16(row, c + 6u, k), weight_f16(row, c + 7u, k)),
    );
}
