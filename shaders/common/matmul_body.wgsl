// Body of matmul_<format>.wgsl: Y = X W^T (+ b) for m activation rows, in 64 x 64 output tiles.
// 256 threads (16 x 16); each accumulates a 4 x 4 register block (rows m0 + 4ty .. +3, columns
// n0 + 4tx .. +3), so one k step costs two vec4 workgroup loads for 16 FMAs (the previous 16 x 16
// one-output-per-thread tile spent two loads per FMA and ran 60x below llama.cpp's prefill).
// Per K-step of 32 columns every thread dequantizes one 8-group of the 64 x 32 weight tile and
// loads one 8-group of the 64 x 32 activation tile; both tiles are stored k-major as vec4s of
// 4 consecutive rows, so the compute loop reads its rows / columns as single vectors. The next
// K-step's group is fetched (and dequantized) into registers before this step's multiply, so its
// loads are in flight during the FMAs (H200 pp512: 8B 617 -> 662 tok/s, 0.5B 7,160 -> 7,433).
// Workgroup memory: 2 x 8 KiB (WebGPU's default limit is 16 KiB).
// Dispatch: x = ceil(n / 64) weight-row tiles, y = ceil(m / 64) activation-row tiles.
#include "common/matmul_params.wgsl"

const TILE: u32 = 64u;
const K_STEP: u32 = 32u;
const VECS_PER_K: u32 = 16u;  // TILE / 4

var<workgroup> w_tile: array<vec4<f32>, 512>;  // [K_STEP][TILE / 4]: w_tile[c * 16 + r / 4][r % 4]
var<workgroup> x_tile: array<vec4<f32>, 512>;  // [K_STEP][TILE / 4]: same for activation rows

// Stores 8 values of row `r` (k = kb .. kb + 7 of this step) into a k-major tile. Consecutive
// threads take consecutive rows, so the 8 stores hit consecutive words (no bank conflicts).
fn store_w8(r: u32, kb: u32, v: Dq8) {
    let col = r / 4u;
    let comp = r % 4u;
    w_tile[(kb + 0u) * VECS_PER_K + col][comp] = v.lo.x;
    w_tile[(kb + 1u) * VECS_PER_K + col][comp] = v.lo.y;
    w_tile[(kb + 2u) * VECS_PER_K + col][comp] = v.lo.z;
    w_tile[(kb + 3u) * VECS_PER_K + col][comp] = v.lo.w;
    w_tile[(kb + 4u) * VECS_PER_K + col][comp] = v.hi.x;
    w_tile[(kb + 5u) * VECS_PER_K + col][comp] = v.hi.y;
    w_tile[(kb + 6u) * VECS_PER_K + col][comp] = v.hi.z;
    w_tile[(kb + 7u) * VECS_PER_K + col][comp] = v.hi.w;
}

fn store_x8(r: u32, kb: u32, v: Dq8) {
    let col = r / 4u;
    let comp = r % 4u;
    x_tile[(kb + 0u) * VECS_PER_K + col][comp] = v.lo.x;
    x_tile[(kb + 1u) * VECS_PER_K + col][comp] = v.lo.y;
    x_tile[(kb + 2u) * VECS_PER_K + col][comp] = v.lo.z;
    x_tile[(kb + 3u) * VECS_PER_K + col][comp] = v.lo.w;
    x_tile[(kb + 4u) * VECS_PER_K + col][comp] = v.hi.x;
    x_tile[(kb + 5u) * VECS_PER_K + col][comp] = v.hi.y;
    x_tile[(kb + 6u) * VECS_PER_K + col][comp] = v.hi.z;
    x_tile[(kb + 7u) * VECS_PER_K + col][comp] = v.hi.w;
}

fn write_row(m: u32, n_first: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let base = m * p.out_stride + p.out_col;
    for (var j = 0u; j < 4u; j++) {
        let n = n_first + j;
        if (n < p.n) {
            var y = v[j];
            if (p.has_bias != 0u) {
                y += bias[n];
            }
            out[base + n] = y;
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    // Loader roles: row lid % 64 of each tile, 8-group lid / 64 of the K-step.
    let load_r = lid % TILE;
    let load_g = lid / TILE;
    let w_row = n0 + load_r;
    let x_row = m0 + load_r;
    let x_base = (p.x_row + x_row) * p.k;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Software pipelining: the next K-step's weights and activations are fetched into registers
    // while this step's tiles are multiplied.
    let zero = Dq8(vec4<f32>(0.0), vec4<f32>(0.0));
    var w_next = zero;
    var x_next = zero;
    if (w_row < p.n && load_g * 8u < p.k) {
        w_next = dequant8(w_row, load_g, p.n, p.k);
    }
    if (x_row < p.m && load_g * 8u < p.k) {
        x_next = load_x8(x_base, load_g, p.k);
    }
    for (var k0 = 0u; k0 < p.k; k0 += K_STEP) {
        store_w8(load_r, load_g * 8u, w_next);
        store_x8(load_r, load_g * 8u, x_next);
        workgroupBarrier();
        let group = (k0 + K_STEP) / 8u + load_g;
        w_next = zero;
        x_next = zero;
        if (w_row < p.n && group * 8u < p.k) {
            w_next = dequant8(w_row, group, p.n, p.k);
        }
        if (x_row < p.m && group * 8u < p.k) {
            x_next = load_x8(x_base, group, p.k);
        }
        for (var c = 0u; c < K_STEP; c++) {
            let a = x_tile[c * VECS_PER_K + local.y];
            let b = w_tile[c * VECS_PER_K + local.x];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }
    let m_first = m0 + local.y * 4u;
    let n_first = n0 + local.x * 4u;
    write_row(m_first, n_first, acc0);
    write_row(m_first + 1u, n_first, acc1);
    write_row(m_first + 2u, n_first, acc2);
    write_row(m_first + 3u, n_first, acc3);
}
