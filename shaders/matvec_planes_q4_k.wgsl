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
//       G = k / 16 groups; vec4 3g, 3g + 1, 3g + 2: planes a (signed), b, c (unsigned) of group
//       g, byte e of word j = element 4j + e; then from vec4 3G, two words per group: s (f32 bits)
//       and the group's f32 sum of x.
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

@group(0) @binding(5) var<storage, read_write> planes: array<vec4<u32>>;

const GROUP_ELEMENTS: u32 = 16u;

// The three plane bytes of four elements t = x / s (|t| < 64): a = floor(t), then two base-256
// digits of the fraction, the last one rounded (to nearest even) with its carry pushed up, so
// a in -64..64 and b, c in 0..255. Every step is exact in f32.
fn element_planes(t: vec4<f32>) -> array<vec4<i32>, 3> {
    let a = floor(t);
    let r1 = (t - a) * 256.0;
    let b = floor(r1);
    let c = vec4<i32>(round((r1 - b) * 256.0));
    let c_carry = c == vec4<i32>(256);
    let b_carried = vec4<i32>(b) + select(vec4<i32>(0), vec4<i32>(1), c_carry);
    let b_carry = b_carried == vec4<i32>(256);
    return array<vec4<i32>, 3>(
        vec4<i32>(a) + select(vec4<i32>(0), vec4<i32>(1), b_carry),
        select(b_carried, vec4<i32>(0), b_carry),
        select(c, vec4<i32>(0), c_carry));
}

// Four bytes (the low 8 bits of each lane) in one word, lane 0 lowest.
fn pack_bytes(v: vec4<i32>) -> u32 {
    let u = bitcast<vec4<u32>>(v) & vec4<u32>(0xffu);
    return (u.x | (u.y << 8u)) | ((u.z << 16u) | (u.w << 24u));
}

// 2^e as f32 for e in -126..127.
fn pow2(e: i32) -> f32 {
    return bitcast<f32>(u32(e + 127) << 23u);
}

const QUANTIZE_THREADS: u32 = 256u;  // 4 threads per group of 16 elements

var<workgroup> quarter_max: array<f32, 256>;
var<workgroup> quarter_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn quantize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let groups = p.k / GROUP_ELEMENTS;
    let quarter = linear_workgroup(wid, nwg) * QUANTIZE_THREADS + tid;
    let g = quarter / 4u;
    let j = quarter % 4u;
    let live = g < groups;
    var v = vec4<f32>(0.0);
    if (live) {
        v = x[p.x_row * (p.k / 4u) + quarter];
    }
    let a = abs(v);
    quarter_max[tid] = max(max(a.x, a.y), max(a.z, a.w));
    quarter_sum[tid] = horizontal_sum(v);
    workgroupBarrier();
    if (!live) {
        return;
    }
    let first = tid - j;
    let m = max(max(quarter_max[first], quarter_max[first + 1u]), max(quarter_max[first + 2u], quarter_max[first + 3u]));
    // s = 2^(exponent of m - 5), so |x| / s < 64; clamped to normal powers of two (|x| below
    // 2^-120 keeps fewer bits; such activations do not occur).
    let e_m = i32((bitcast<u32>(m) >> 23u) & 0xffu) - 127;
    let e = clamp(e_m - 5, -120, 125);
    let q = element_planes(v * pow2(-e));
    planes[3u * g][j] = pack_bytes(q[0]);
    planes[3u * g + 1u][j] = pack_bytes(q[1]);
    planes[3u * g + 2u][j] = pack_bytes(q[2]);
    if (j == 0u) {
        let sum = (quarter_sum[first] + quarter_sum[first + 1u]) + (quarter_sum[first + 2u] + quarter_sum[first + 3u]);
        // A non-finite group (m = inf or NaN) gets s = NaN, so its rows come out NaN as in f32.
        let s = pow2(e) * (1.0 + (m - m));
        let side = 3u * groups + g / 2u;
        planes[side][2u * (g % 2u)] = bitcast<u32>(s);
        planes[side][2u * (g % 2u) + 1u] = bitcast<u32>(sum);
    }
}

// The planes of one group (a, b, c: 4 words each) and its (s, sum of x).
struct Group {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    side: vec2<f32>,
}

fn load_group(g: u32) -> Group {
    let w = planes[3u * (p.k / GROUP_ELEMENTS) + g / 2u];
    let side = bitcast<vec2<f32>>(select(w.xy, w.zw, g % 2u == 1u));
    return Group(planes[3u * g], planes[3u * g + 1u], planes[3u * g + 2u], side);
}

// sum(q x) over one group: `q` its 16 nibbles (4 per word, one per byte). A * 2^8 + B is below
// 2^24 (|A| <= 16 * 15 * 64), so f32 holds it exactly: one rounding, in the add; s / 2^8 then
// scales exactly.
fn group_dot(q: vec4<u32>, x: Group) -> f32 {
    let da = (dot4I8Packed(q.x, x.a.x) + dot4I8Packed(q.y, x.a.y)) + (dot4I8Packed(q.z, x.a.z) + dot4I8Packed(q.w, x.a.w));
    let db = (dot4U8Packed(q.x, x.b.x) + dot4U8Packed(q.y, x.b.y)) + (dot4U8Packed(q.z, x.b.z) + dot4U8Packed(q.w, x.b.w));
    let dc = (dot4U8Packed(q.x, x.c.x) + dot4U8Packed(q.y, x.c.y)) + (dot4U8Packed(q.z, x.c.z) + dot4U8Packed(q.w, x.c.w));
    return (f32(da * 256 + i32(db)) + f32(dc) * (1.0 / 256.0)) * (x.side.x * (1.0 / 256.0));
}

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

// The f32 kernel's entry points (matvec_q4_k.wgsl), for matrices too small to repay `quantize`.
@compute @workgroup_size(128)
fn f32_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 32u);
}

@compute @workgroup_size(128)
fn f32_lanes64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 64u);
}

@compute @workgroup_size(128)
fn f32_lanes128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 128u);
}
