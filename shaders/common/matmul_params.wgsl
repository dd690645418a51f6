// The uniform block and bindings shared by matvec_<format>.wgsl and matmul_<format>.wgsl.

#include "common/matmul_struct.wgsl"

@group(0) @binding(0) var<uniform> p: MatMulParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;    // packed [n, k]
@group(0) @binding(2) var<storage, read> x: array<f32>;          // [x_row + m, k]
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // [n] (a dummy when has_bias == 0)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [m, out_stride]

// Activation `i`, or 0 at and past `limit` (the end of the row).
fn x_at(i: u32, limit: u32) -> f32 {
    if (i < limit) {
        return x[i];
    }
    return 0.0;
}

// Activations row_base + 8g .. +7; columns past k read as 0 (k is any size for F32/F16).
fn load_x8(row_base: u32, group: u32, k: u32) -> Dq8 {
    let i = row_base + group * 8u;
    let end = row_base + k;
    return Dq8(
        vec4<f32>(x_at(i, end), x_at(i + 1u, end), x_at(i + 2u, end), x_at(i + 3u, end)),
        vec4<f32>(x_at(i + 4u, end), x_at(i + 5u, end), x_at(i + 6u, end), x_at(i + 7u, end)),
    );
}
