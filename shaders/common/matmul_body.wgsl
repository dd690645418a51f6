// Body of matmul_<format>.wgsl: Y = X W^T (+ b) for m activation rows, in 16 x 16 output tiles.
// Per K-step of 32 columns, 64 threads dequantize the 16 x 32 weight tile (one 8-group each) and
// all 256 threads stage the 16 x 32 activation tile into workgroup memory; each thread then
// accumulates one output. Dispatch: x = ceil(n / 16) weight-row tiles, y = ceil(m / 16).
#include "common/matmul_params.wgsl"

const TILE: u32 = 16u;
const K_STEP: u32 = 32u;

var<workgroup> w_tile: array<f32, 512>;  // [TILE n-rows][K_STEP]
var<workgroup> x_tile: array<f32, 512>;  // [TILE m-rows][K_STEP]

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let out_n = n0 + local.x;
    let out_m = m0 + local.y;
    var acc = 0.0;
    let groups_per_step = K_STEP / 8u;
    for (var k0 = 0u; k0 < p.k; k0 += K_STEP) {
        // Weight tile: thread lid < 64 dequantizes row lid / 4, group lid % 4 of this K-step.
        if (lid < TILE * groups_per_step) {
            let r = lid / groups_per_step;
            let g = lid % groups_per_step;
            let group = k0 / 8u + g;
            var w = Dq8(vec4<f32>(0.0), vec4<f32>(0.0));
            if (n0 + r < p.n && group * 8u < p.k) {
                w = dequant8(n0 + r, group, p.n, p.k);
            }
            let base = r * K_STEP + g * 8u;
            w_tile[base] = w.lo.x;
            w_tile[base + 1u] = w.lo.y;
            w_tile[base + 2u] = w.lo.z;
            w_tile[base + 3u] = w.lo.w;
            w_tile[base + 4u] = w.hi.x;
            w_tile[base + 5u] = w.hi.y;
            w_tile[base + 6u] = w.hi.z;
            w_tile[base + 7u] = w.hi.w;
        }
        // Activation tile: 2 elements per thread.
        for (var i = lid; i < TILE * K_STEP; i += 256u) {
            let r = i / K_STEP;
            let c = k0 + i % K_STEP;
            var v = 0.0;
            if (m0 + r < p.m && c < p.k) {
                v = x[(p.x_row + m0 + r) * p.k + c];
            }
            x_tile[i] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < K_STEP; c++) {
            acc += x_tile[local.y * K_STEP + c] * w_tile[local.x * K_STEP + c];
        }
        workgroupBarrier();
    }
    if (out_n < p.n && out_m < p.m) {
        if (p.has_bias != 0u) {
            acc += bias[out_n];
        }
        out[out_m * p.out_stride + p.out_col + out_n] = acc;
    }
}
