// matvec_planes_q6_k: MatVec(Q6_K) with integer dot products -- decode projection y = W x (+ b)
// for one activation row with a Q6_K weight, on GPUs where the engine picks it
// (engine::shaders::kernel_file_for; matvec_q6_k.wgsl is the f32 variant with the same bindings 0-4).
// The activations go through the planes of common/planes.wgsl (see matvec_planes_q4_k.wgsl for
// why and how exact): each 16-element group of 6-bit weights is 12 packed dot products.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments ql | qh | scales | d; k a multiple of 256)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read (by `quantize`)
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
//   5 planes: array<vec4<u32>> (read_write, device scratch: common/planes_matvec.wgsl)
// Dispatch (engine::shaders::plan_for): matrices of at least PLANES_MIN_WEIGHTS weights run
//   `quantize` first, workgroup_size 256, ceil(k / 1024) workgroups (4 threads per group);
//   then `main` / `lanes64` / `lanes128` with the rows per workgroup of matvec_q6_k.wgsl (8 / 4 /
//   2: engine::shaders::matvec_rows_per_workgroup; `main` and `lanes64` as 64 / 128 threads per
//   four rows, `lanes128` per pair), workgroups folded by engine::shaders::grid;
//   smaller ones run the f32 kernel's `f32_main` / `f32_lanes64` / `f32_lanes128` instead.
//
// Work split as matvec_q6_k.wgsl: slot t = 4 half + u of a block holds the low 4 bits of group
// 8 half + u (low nibbles) and of group 8 half + u + 4 (high nibbles), their top 2 bits in qh
// bytes 32 half + 16 (u % 2) + (0..15) at bits 2 (u / 2) and 4 + 2 (u / 2). Per group a row
// needs d * scale * (sum(q x) - 32 sum(x)).

#include "common/matvec_rows.wgsl"
#include "common/matvec_q6_k_f32.wgsl"
#include "common/planes_matvec.wgsl"
#include "common/matvec_f32_entries.wgsl"

// The 6-bit weights of 16 elements as bytes: low bits from `ql` (shifted by `ql_shift`), top
// two from `qh` (shifted by `qh_shift`).
fn six_bit_bytes(ql: vec4<u32>, ql_shift: u32, qh: vec4<u32>, qh_shift: u32) -> vec4<u32> {
    return ((ql >> vec4<u32>(ql_shift)) & vec4<u32>(0x0f0f0f0fu)) | (((qh >> vec4<u32>(qh_shift)) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
}

// One row's share of slot `slot` (0..7 of its block): `w` its weights (common/matvec_q6_k_f32.wgsl
// `q6_slot`), `x_lo` / `x_hi` the slot's two groups.
fn slot_dot(w: Q6Slot, slot: u32, x_lo: Group, x_hi: Group) -> f32 {
    let half_index = slot / 4u;
    let u = slot % 4u;
    let shift_lo = 2u * (u / 2u);
    let dot_lo = group_dot(six_bit_bytes(w.ql, 0u, w.qh, shift_lo), x_lo);
    let dot_hi = group_dot(six_bit_bytes(w.ql, 4u, w.qh, shift_lo + 4u), x_hi);
    let scale_lo = signed_byte(w.scales, 8u * half_index + u);
    let scale_hi = signed_byte(w.scales, 8u * half_index + 4u + u);
    return w.d * (scale_lo * (dot_lo - 32.0 * x_lo.side.y) + scale_hi * (dot_hi - 32.0 * x_hi.side.y));
}

// The entry points' rows per workgroup (2 * THREADS / lanes, common/matvec_rows.wgsl): with 32
// or 64 threads per pair of rows (`main`, `lanes64`), 2 * lanes threads take four rows each
// (H200, Llama-3-8B decode: 237.1 -> 240.7 tok/s; the same for Q4_K was slower, 237 -> 222);
// with 128, pairs.
fn matvec_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    if (lanes == 32u || lanes == 64u) {
        row_quads(wid, nwg, tid, 2u * lanes);
    } else {
        row_pairs(wid, nwg, tid, lanes);
    }
}

var<workgroup> quad_partial: array<vec4<f32>, 128>; // THREADS

// Four rows per thread, `lanes` (64 or 128) threads per four rows; overhang rows are clamped and
// never written, as in the pair kernels.
fn row_quads(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = linear_workgroup(wid, nwg) * (4u * THREADS / lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    let r = 4u * (tid / lanes);
    let rows = vec4<u32>(clamped_row(row0, r), clamped_row(row0, r + 1u), clamped_row(row0, r + 2u), clamped_row(row0, r + 3u)) * blocks_per_row;
    var sums = vec4<f32>(0.0);
    let slots = blocks_per_row * 8u;
    for (var s = tid % lanes; s < slots; s += lanes) {
        let b = s / 8u;
        let slot = s % 8u;
        let w0 = q6_slot(rows.x + b, slot, n_blocks);
        let w1 = q6_slot(rows.y + b, slot, n_blocks);
        let w2 = q6_slot(rows.z + b, slot, n_blocks);
        let w3 = q6_slot(rows.w + b, slot, n_blocks);
        let g_lo = b * 16u + 8u * (slot / 4u) + slot % 4u;
        let x_lo = load_group(g_lo);
        let x_hi = load_group(g_lo + 4u);
        sums.x += slot_dot(w0, slot, x_lo, x_hi);
        sums.y += slot_dot(w1, slot, x_lo, x_hi);
        sums.z += slot_dot(w2, slot, x_lo, x_hi);
        sums.w += slot_dot(w3, slot, x_lo, x_hi);
    }
    let lane = tid % lanes;
    quad_partial[tid] = sums;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            quad_partial[tid] += quad_partial[tid + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let y = quad_partial[tid];
        for (var j = 0u; j < 4u; j++) {
            let row = row0 + r + j;
            if (row < p.n) {
                var v = y[j];
                if (p.has_bias != 0u) {
                    v += bias[row];
                }
                out[p.out_col + row] = v;
            }
        }
    }
}

// Two rows per thread (`lanes` threads per pair of rows: the entry point `lanes128`).
fn row_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    let slots = blocks_per_row * 8u;
    for (var s = tid % lanes; s < slots; s += lanes) {
        let b = s / 8u;
        let slot = s % 8u;
        let wa = q6_slot(rows.x + b, slot, n_blocks);
        let wb = q6_slot(rows.y + b, slot, n_blocks);
        let g_lo = b * 16u + 8u * (slot / 4u) + slot % 4u;
        let x_lo = load_group(g_lo);
        let x_hi = load_group(g_lo + 4u);
        sum_a += slot_dot(wa, slot, x_lo, x_hi);
        sum_b += slot_dot(wb, slot, x_lo, x_hi);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
