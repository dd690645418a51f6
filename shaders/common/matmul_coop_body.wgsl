// Body of matmul_coop_<format>.wgsl: Y = X W^T (+ b) for m activation rows on cooperative
// matrices (tensor cores), so the engine swaps it for matmul_body.wgsl where the adapter has
// 16 x 16 x 16 f16 -> f32 matrices. Three tile shapes (engine::shaders::plan_for picks by
// workgroup count): `main` 64 weight rows x 64 activation rows (128 threads), `rows128` 64 x 128
// (256 threads) and `wide` 128 x 128 (256 threads): bigger tiles convert each weight and
// activation fewer times, smaller ones fill the GPU on small matrices.
//
// Exactness: X and the dequantized W are each split into two f16 terms, v = hi + lo, hi = v with
// its mantissa cut to 11 significant bits by a mask (exact in f16, and v - hi exact in f32) and
// lo = f16(v - hi); every 16 x 16 x 16 step multiplies hi*hi + hi*lo + lo*hi with f32
// accumulation (NMSE ~1e-13..1e-11 against the f32 reference, like the f32 kernel). Plain f16
// operands give NMSE ~6e-8. The split must not be written as lo = f16(v - f32(f16(v))): NVIDIA's
// compiler folds f32(f16(v)) to v there and lo becomes 0 (measured: NMSE stayed at 6e-8). The
// three multiplies cost ~5 % (H200: 8B pp512 1,919 tok/s with one f16 multiply vs 1,828 exact):
// the kernel is bound by dequantization and tile stores, not by the tensor cores.
// Values beyond f16's range (|v| >= 65520) are not representable; prefill activations stay below.
//
// Subgroups of exactly 32 lanes (the engine enables this kernel only on such adapters); each
// subgroup owns a 32 x 32 (`main`, `rows128`) or 32 x 64 (`wide`) block of the tile as 16 x 16
// accumulators. Per K-step of 32 the threads dequantize the weight tile and load the activation
// tile, 8 values per item, 4 neighbouring threads per row (coalesced reads), fetched one K-step
// ahead. Tiles are vec4<f16> arrays, 32 + 8 halves per row (80 bytes: 16-byte aligned, rows off
// one bank), so a thread stores its 8 values as two 8-byte writes per term (per-half stores ran
// at 1,190 tok/s on the 8B instead of 1,828).
// Workgroup memory: activation tiles 2 x 10 KiB (128 rows; `main` uses half), weight tiles
// 2 x 5 KiB (`wide`: its own 2 x 10 KiB), store stage 8 KiB: 38 KiB, `wide` 48 KiB.
// Dispatch: `main`: (ceil(n / 64), ceil(m / 64)); `rows128`: (ceil(n / 64), ceil(m / 128));
// `wide`: (ceil(n / 128), ceil(m / 128)).
#include "common/matmul_params.wgsl"

const W_ROWS: u32 = 64u;    // weight rows (output columns) per workgroup
const K_STEP: u32 = 32u;
const ROW_VECS: u32 = 10u;  // vec4<f16> per tile row (32 + 8 padding halves)

alias Frag16A = coop_mat16x16<f16, A>;
alias Frag16B = coop_mat16x16<f16, B>;
alias Acc16 = coop_mat16x16<f32, C>;

var<workgroup> x_hi: array<vec4<f16>, 1280>;  // [128 rows][ROW_VECS], row-major: A operands
var<workgroup> x_lo: array<vec4<f16>, 1280>;
var<workgroup> w_hi: array<vec4<f16>, 640>;   // [64 rows][ROW_VECS]: W^T read column-major, B operands
var<workgroup> w_lo: array<vec4<f16>, 640>;
var<workgroup> stage: array<f32, 2048>;       // [subgroup][16 x 16] accumulator being written out
var<workgroup> w_hi_wide: array<vec4<f16>, 1280>;  // [128 rows][ROW_VECS] for `wide`
var<workgroup> w_lo_wide: array<vec4<f16>, 1280>;

// hi and lo terms of 4 values (see the header).
fn split4(v: vec4<f32>) -> array<vec4<f16>, 2> {
    let hi = bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffffe000u));
    return array<vec4<f16>, 2>(vec4<f16>(hi), vec4<f16>(v - hi));
}

// Stores 8 weights (tile row r, 8-group g of this K-step).
fn store_w8(r: u32, g: u32, v: Dq8) {
    let a = split4(v.lo);
    let b = split4(v.hi);
    let at = r * ROW_VECS + 2u * g;
    w_hi[at] = a[0];
    w_hi[at + 1u] = b[0];
    w_lo[at] = a[1];
    w_lo[at + 1u] = b[1];
}

fn store_x8(r: u32, g: u32, v: Dq8) {
    let a = split4(v.lo);
    let b = split4(v.hi);
    let at = r * ROW_VECS + 2u * g;
    x_hi[at] = a[0];
    x_hi[at + 1u] = b[0];
    x_lo[at] = a[1];
    x_lo[at + 1u] = b[1];
}

fn fetch_w(row: u32, group: u32) -> Dq8 {
    if (row < p.n && group * 8u < p.k) {
        return dequant8(row, group, p.n, p.k);
    }
    return Dq8(vec4<f32>(0.0), vec4<f32>(0.0));
}

fn fetch_x(row: u32, group: u32) -> Dq8 {
    if (row < p.m && group * 8u < p.k) {
        return load_x8((p.x_row + row) * p.k, group, p.k);
    }
    return Dq8(vec4<f32>(0.0), vec4<f32>(0.0));
}

// hi*hi + hi*lo + lo*hi of one 16 x 16 output block over 16 k.
fn mma3(a_hi: Frag16A, a_lo: Frag16A, b_hi: Frag16B, b_lo: Frag16B, c: Acc16) -> Acc16 {
    return coopMultiplyAdd(a_lo, b_hi, coopMultiplyAdd(a_hi, b_lo, coopMultiplyAdd(a_hi, b_hi, c)));
}

// Writes one 16 x 16 accumulator (output rows m_first.., columns n_first..) through the stage,
// with bias and bounds. Called by every thread (the barriers are workgroup-wide).
fn write_block(c: Acc16, sub: u32, lane: u32, m_first: u32, n_first: u32) {
    coopStoreT(c, &stage[sub * 256u], 16u);
    workgroupBarrier();
    for (var i = 0u; i < 8u; i++) {
        let e = lane + 32u * i;
        let m = m_first + e / 16u;
        let n = n_first + e % 16u;
        if (m < p.m && n < p.n) {
            var y = stage[sub * 256u + e];
            if (p.has_bias != 0u) {
                y += bias[n];
            }
            out[m * p.out_stride + p.out_col + n] = y;
        }
    }
    workgroupBarrier();
}

// One output tile: weight rows n0 .. n0 + 63, activation rows m0 .. m0 + 2 * threads / 4 - 1.
// Loader items (row, 8-group) of the 64 x 32 weight tile: lid and, with 128 threads, lid + 128;
// of the activation tile: lid and lid + threads. Item i is row i / 4, group i % 4.
fn tile(n0: u32, m0: u32, lid: u32, threads: u32) {
    let sub = lid / 32u;
    let lane = lid % 32u;
    let sm = (sub / 2u) * 32u;
    let sn = (sub % 2u) * 32u;
    let r = lid / 4u;
    let g = lid % 4u;
    let two_w = threads == 128u;  // a second weight item per thread
    let r2 = r + threads / 4u;
    var acc00 = Acc16();
    var acc01 = Acc16();
    var acc10 = Acc16();
    var acc11 = Acc16();
    var w_next0 = fetch_w(n0 + r, g);
    var w_next1 = fetch_w(n0 + 32u + r, g);
    var x_next0 = fetch_x(m0 + r, g);
    var x_next1 = fetch_x(m0 + r2, g);
    for (var k0 = 0u; k0 < p.k; k0 += K_STEP) {
        store_w8(r, g, w_next0);
        if (two_w) {
            store_w8(32u + r, g, w_next1);
        }
        store_x8(r, g, x_next0);
        store_x8(r2, g, x_next1);
        workgroupBarrier();
        let group = (k0 + K_STEP) / 8u + g;
        w_next0 = fetch_w(n0 + r, group);
        if (two_w) {
            w_next1 = fetch_w(n0 + 32u + r, group);
        }
        x_next0 = fetch_x(m0 + r, group);
        x_next1 = fetch_x(m0 + r2, group);
        for (var kk = 0u; kk < K_STEP; kk += 16u) {
            let xa = sm * ROW_VECS + kk / 4u;
            let xb = xa + 16u * ROW_VECS;
            let wa = sn * ROW_VECS + kk / 4u;
            let wb = wa + 16u * ROW_VECS;
            let a0_hi = coopLoadT<Frag16A>(&x_hi[xa], ROW_VECS);
            let a0_lo = coopLoadT<Frag16A>(&x_lo[xa], ROW_VECS);
            let a1_hi = coopLoadT<Frag16A>(&x_hi[xb], ROW_VECS);
            let a1_lo = coopLoadT<Frag16A>(&x_lo[xb], ROW_VECS);
            let b0_hi = coopLoad<Frag16B>(&w_hi[wa], ROW_VECS);
            let b0_lo = coopLoad<Frag16B>(&w_lo[wa], ROW_VECS);
            let b1_hi = coopLoad<Frag16B>(&w_hi[wb], ROW_VECS);
            let b1_lo = coopLoad<Frag16B>(&w_lo[wb], ROW_VECS);
            acc00 = mma3(a0_hi, a0_lo, b0_hi, b0_lo, acc00);
            acc01 = mma3(a0_hi, a0_lo, b1_hi, b1_lo, acc01);
            acc10 = mma3(a1_hi, a1_lo, b0_hi, b0_lo, acc10);
            acc11 = mma3(a1_hi, a1_lo, b1_hi, b1_lo, acc11);
        }
        workgroupBarrier();
    }
    write_block(acc00, sub, lane, m0 + sm, n0 + sn);
    write_block(acc01, sub, lane, m0 + sm, n0 + sn + 16u);
    write_block(acc10, sub, lane, m0 + sm + 16u, n0 + sn);
    write_block(acc11, sub, lane, m0 + sm + 16u, n0 + sn + 16u);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tile(wid.x * W_ROWS, wid.y * 64u, lid, 128u);
}

@compute @workgroup_size(256)
fn rows128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tile(wid.x * W_ROWS, wid.y * 128u, lid, 256u);
}

fn store_w8_wide(r: u32, g: u32, v: Dq8) {
    let a = split4(v.lo);
    let b = split4(v.hi);
    let at = r * ROW_VECS + 2u * g;
    w_hi_wide[at] = a[0];
    w_hi_wide[at + 1u] = b[0];
    w_lo_wide[at] = a[1];
    w_lo_wide[at + 1u] = b[1];
}

// 128 x 128 tiles, 256 threads: subgroup s owns rows 32 (s / 2) .. +31 and columns 64 (s % 2) ..
// +63 as 2 x 4 accumulators; 2 weight and 2 activation items per thread. H200: the 8B's gate|up
// (28672 x 4096, 896 workgroups) 4.4 -> 3.1 ms at pp512, prefill 2,104 -> 2,350 tok/s.
@compute @workgroup_size(256)
fn wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n0 = wid.x * 128u;
    let m0 = wid.y * 128u;
    let sub = lid / 32u;
    let lane = lid % 32u;
    let sm = (sub / 2u) * 32u;
    let sn = (sub % 2u) * 64u;
    let r = lid / 4u;
    let g = lid % 4u;
    var c00 = Acc16();
    var c01 = Acc16();
    var c02 = Acc16();
    var c03 = Acc16();
    var c10 = Acc16();
    var c11 = Acc16();
    var c12 = Acc16();
    var c13 = Acc16();
    var w_next0 = fetch_w(n0 + r, g);
    var w_next1 = fetch_w(n0 + 64u + r, g);
    var x_next0 = fetch_x(m0 + r, g);
    var x_next1 = fetch_x(m0 + 64u + r, g);
    for (var k0 = 0u; k0 < p.k; k0 += K_STEP) {
        store_w8_wide(r, g, w_next0);
        store_w8_wide(64u + r, g, w_next1);
        store_x8(r, g, x_next0);
        store_x8(64u + r, g, x_next1);
        workgroupBarrier();
        let group = (k0 + K_STEP) / 8u + g;
        w_next0 = fetch_w(n0 + r, group);
        w_next1 = fetch_w(n0 + 64u + r, group);
        x_next0 = fetch_x(m0 + r, group);
        x_next1 = fetch_x(m0 + 64u + r, group);
        for (var kk = 0u; kk < K_STEP; kk += 16u) {
            let xa = sm * ROW_VECS + kk / 4u;
            let xb = xa + 16u * ROW_VECS;
            let wa = sn * ROW_VECS + kk / 4u;
            let a0_hi = coopLoadT<Frag16A>(&x_hi[xa], ROW_VECS);
            let a0_lo = coopLoadT<Frag16A>(&x_lo[xa], ROW_VECS);
            let a1_hi = coopLoadT<Frag16A>(&x_hi[xb], ROW_VECS);
            let a1_lo = coopLoadT<Frag16A>(&x_lo[xb], ROW_VECS);
            let b0_hi = coopLoad<Frag16B>(&w_hi_wide[wa], ROW_VECS);
            let b0_lo = coopLoad<Frag16B>(&w_lo_wide[wa], ROW_VECS);
            c00 = mma3(a0_hi, a0_lo, b0_hi, b0_lo, c00);
            c10 = mma3(a1_hi, a1_lo, b0_hi, b0_lo, c10);
            let b1_hi = coopLoad<Frag16B>(&w_hi_wide[wa + 16u * ROW_VECS], ROW_VECS);
            let b1_lo = coopLoad<Frag16B>(&w_lo_wide[wa + 16u * ROW_VECS], ROW_VECS);
            c01 = mma3(a0_hi, a0_lo, b1_hi, b1_lo, c01);
            c11 = mma3(a1_hi, a1_lo, b1_hi, b1_lo, c11);
            let b2_hi = coopLoad<Frag16B>(&w_hi_wide[wa + 32u * ROW_VECS], ROW_VECS);
            let b2_lo = coopLoad<Frag16B>(&w_lo_wide[wa + 32u * ROW_VECS], ROW_VECS);
            c02 = mma3(a0_hi, a0_lo, b2_hi, b2_lo, c02);
            c12 = mma3(a1_hi, a1_lo, b2_hi, b2_lo, c12);
            let b3_hi = coopLoad<Frag16B>(&w_hi_wide[wa + 48u * ROW_VECS], ROW_VECS);
            let b3_lo = coopLoad<Frag16B>(&w_lo_wide[wa + 48u * ROW_VECS], ROW_VECS);
            c03 = mma3(a0_hi, a0_lo, b3_hi, b3_lo, c03);
            c13 = mma3(a1_hi, a1_lo, b3_hi, b3_lo, c13);
        }
        workgroupBarrier();
    }
    write_block(c00, sub, lane, m0 + sm, n0 + sn);
    write_block(c01, sub, lane, m0 + sm, n0 + sn + 16u);
    write_block(c02, sub, lane, m0 + sm, n0 + sn + 32u);
    write_block(c03, sub, lane, m0 + sm, n0 + sn + 48u);
    write_block(c10, sub, lane, m0 + sm + 16u, n0 + sn);
    write_block(c11, sub, lane, m0 + sm + 16u, n0 + sn + 16u);
    write_block(c12, sub, lane, m0 + sm + 16u, n0 + sn + 32u);
    write_block(c13, sub, lane, m0 + sm + 16u, n0 + sn + 48u);
}
