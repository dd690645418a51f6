// matvec_planes_q4_k: MatVec(Q4_K) with integer dot products -- decode projection y = W x (+ b)
// for one activation row with a Q4_K weight, on GPUs where the engine picks it
// (engine::shaders::kernel_file_for; matvec_q4_k.wgsl is the f32 variant with the same bindings 0-4).
//
// Why: with f32 activations the nibble-to-float conversions of a Q4_K matvec cost more than its
// loads (H200, Llama-3-8B decode: a probe without them ran 247 instead of 182 tok/s). Here the
// activations are first written as three 8-bit planes per 16-element group, x = s (a + b / 2^8 +
// c / 2^16) with s a power of two per group, so the products run as 4-way integer dot products
// (dot4I8Packed / dot4U8Packed) on the packed nibbles. Not an 8-bit approximation: the planes
// keep 22-23 significant bits of the group's largest value, and every step below is exact
// except one f32 rounding per group: NMSE against the f64-accumulating reference 5e-14..2e-13,
// as the f32 kernel's (engine/tests/kernel_cases). H200, Llama-3-8B Q4_K_M decode: 175 -> 209 tok/s.
//
// Bindings (group 0):
//   0 uniform MatMulParams { m (= 1), n, k, x_row, has_bias, out_stride, out_col }
//   1 weights: array<vec4<u32>>      packed [n, k] (SoA segments dm_scales | qs; k a multiple of 256)
//   2 x: array<vec4<f32>>            [x_row + 1, k]; row x_row is read (by `quantize`)
//   3 bias: array<f32>               [n] (a dummy binding when has_bias == 0)
//   4 out: array<f32> (read_write)   out[out_col + r], r < n
//   5 planes: array<vec4<u32>> (read_write, device scratch of engine::shaders::scratch_bytes_for)
//       G = k / 16 groups, plane-major: vec4 P G + group_slot(g) holds plane P (a signed, b, c
//       unsigned) of group g, byte e of word j = element 4j + e; then from vec4 3G, two words at
//       group_slot(g): s (f32 bits) and the group's f32 sum of x (common/planes.wgsl).
// Dispatch (engine::shaders::plan_for): matrices of at least PLANES_MIN_WEIGHTS weights run
//   `quantize` first, workgroup_size 256, ceil(G / 64) workgroups (4 threads per group);
//   then `main` / `lanes64` / `lanes128` as matvec_q4_k.wgsl (32 / 64 / 128 threads per pair of
//   rows, engine::shaders::matvec_rows_per_workgroup), workgroups folded by engine::shaders::grid;
//   smaller ones run the f32 kernel's `f32_main` / `f32_lanes64` / `f32_lanes128` instead.
//
// Work split as matvec_q4_k.wgsl: slot t of a block = qs bytes 32c + 16h .. + 15 (c = t / 2,
// h = t % 2): low nibbles are group 4c + h of the block (elements 16h.. of sub-block 2c), high
// nibbles group 4c + 2 + h; each row needs d * sc * sum(q x) - dmin * m * sum(x) per group.

#include "common/matvec_rows.wgsl"
#include "common/k_scales.wgsl"
#include "common/matvec_q4_k_f32.wgsl"
#include "common/planes_matvec.wgsl"
#include "common/matvec_f32_entries.wgsl"

// One row's share of a slot: `q` its 16 qs bytes, `block_meta` its block's (d, dmin) and
// scales, `c` the sub-block pair, `x_lo` / `x_hi` the slot's two groups.
fn slot_dot(q: vec4<u32>, block_meta: vec4<u32>, c: u32, x_lo: Group, x_hi: Group) -> f32 {
    let dm = unpack2x16float(block_meta.x);
    let lo = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c);
    let hi = k_scale_min(block_meta.y, block_meta.z, block_meta.w, 2u * c + 1u);
    let dot_lo = group_dot(q & vec4<u32>(0x0f0f0f0fu), x_lo);
    let dot_hi = group_dot((q >> vec4<u32>(4u)) & vec4<u32>(0x0f0f0f0fu), x_hi);
    return dm.x * (f32(lo.x) * dot_lo + f32(hi.x) * dot_hi) - dm.y * (f32(lo.y) * x_lo.side.y + f32(hi.y) * x_hi.side.y);
}

fn matvec_pairs(wid: vec3<u32>, nwg: vec3<u32>, tid: u32, lanes: u32) {
    let row0 = first_pair_row(wid, nwg, lanes);
    if (row0 >= p.n) {
        return;
    }
    let blocks_per_row = p.k / 256u;
    let n_blocks = p.n * blocks_per_row;
    let qs_seg4 = n_blocks;
    let rows = pair_row_blocks(row0, tid, blocks_per_row, lanes);
    var sum_a = 0.0;
    var sum_b = 0.0;
    let slots = blocks_per_row * 8u;
    for (var s = tid % lanes; s < slots; s += lanes) {
        let b = s / 8u;
        let c = (s % 8u) / 2u;
        let qa = weights[qs_seg4 + (rows.x + b) * 8u + s % 8u];
        let qb = weights[qs_seg4 + (rows.y + b) * 8u + s % 8u];
        let meta_a = weights[rows.x + b];
        let meta_b = weights[rows.y + b];
        let g_lo = b * 16u + 4u * c + s % 2u;
        let x_lo = load_group(g_lo);
        let x_hi = load_group(g_lo + 2u);
        sum_a += slot_dot(qa, meta_a, c, x_lo, x_hi);
        sum_b += slot_dot(qb, meta_b, c, x_lo, x_hi);
    }
    finish_row_pair_lanes(tid, row0, sum_a, sum_b, lanes);
}
