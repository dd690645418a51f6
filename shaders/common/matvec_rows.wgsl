// Frame of the pair decode matvecs (matvec_q4_k/q6_k/q8_0/q5_0.wgsl): y = W x (+ b) for one
// activation row. A workgroup of THREADS threads gives each pair of consecutive output rows
// `lanes` threads (32, 64 or 128: one entry point each); a thread walks its share of k for both
// rows at once, so it loads its activations (16-byte loads) once for two rows -- the matvecs are
// bound by these loads more than by the weight bytes -- and has at least two independent weight
// loads in flight per step. The lanes' partial sums meet in workgroup memory at the end.
// Rows per workgroup (2 * THREADS / lanes) must match engine::shaders::matvec_rows_per_workgroup.
#include "common/dq8.wgsl"
#include "common/grid.wgsl"
#include "common/matmul_struct.wgsl"

@group(0) @binding(0) var<uniform> p: MatMulParams;
@group(0) @binding(1) var<storage, read> weights: array<vec4<u32>>; // packed [n, k], 16-byte segments
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;       // [x_row + 1, k], k % 4 == 0
@group(0) @binding(3) var<storage, read> bias: array<f32>;          // [n] (a dummy when has_bias == 0)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // out[out_col + r], r < n

const THREADS: u32 = 128u;

// The activations of one 32-element block (8 vec4s from `xi`): elements 0..15, then 16..31.
struct XBlock {
    lo0: vec4<f32>,
    lo1: vec4<f32>,
    lo2: vec4<f32>,
    lo3: vec4<f32>,
    hi0: vec4<f32>,
    hi1: vec4<f32>,
    hi2: vec4<f32>,
    hi3: vec4<f32>,
}

var<workgroup> partial: array<f32, 256>; // 2 * THREADS

// Word `i` of the packed weight (scales and other per-block fields).
fn word_at(i: u32) -> u32 {
    return weights[i / 4u][i % 4u];
}

// Integers below 2^23 to f32 without an int-to-float conversion (a quarter-rate instruction on
// NVIDIA): OR-ing in the exponent of 2^23 gives exactly 2^23 + v.
fn small_to_f32(v: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(v | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0);
}

// The four bytes of `w` shifted right by `shift` and masked with `mask` (lowest byte first).
fn byte_fields(w: u32, shift: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(shift))) & vec4<u32>(mask);
}

// Signed byte `i` (0..15) of a 16-byte word, as f32.
fn signed_byte(v: vec4<u32>, i: u32) -> f32 {
    return f32(bitcast<i32>(v[i / 4u] << (24u - 8u * (i % 4u))) >> 24u);
}

fn horizontal_sum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

fn x_block(xi: u32) -> XBlock {
    return XBlock(x[xi], x[xi + 1u], x[xi + 2u], x[xi + 3u], x[xi + 4u], x[xi + 5u], x[xi + 6u], x[xi + 7u]);
}

fn x_block_sum(v: XBlock) -> f32 {
    return horizontal_sum(((v.lo0 + v.lo1) + (v.lo2 + v.lo3)) + ((v.hi0 + v.hi1) + (v.hi2 + v.hi3)));
}

// The f16 scale of `block` from a segment of one f16 per block at the start of the weights.
fn block_scale(block: u32) -> f32 {
    return f16_at(word_at(block / 2u), block % 2u);
}

// The first weight block of this thread's two rows in a pair kernel (`lanes` threads per pair of rows).
fn pair_row_blocks(row0: u32, tid: u32, blocks_per_row: u32, lanes: u32) -> vec2<u32> {
    let r = 2u * (tid / lanes);
    return vec2<u32>(clamped_row(row0, r), clamped_row(row0, r + 1u)) * blocks_per_row;
}

// The first row of this workgroup in a pair kernel with `lanes` threads per pair of rows
// (2 * THREADS / lanes rows per workgroup).
fn first_pair_row(wid: vec3<u32>, nwg: vec3<u32>, lanes: u32) -> u32 {
    return linear_workgroup(wid, nwg) * (2u * THREADS / lanes);
}

// Row `r` of the workgroup, clamped to the last row: overhang rows repeat real work (their loads
// stay in bounds) and are never written.
fn clamped_row(row0: u32, r: u32) -> u32 {
    return min(row0 + r, p.n - 1u);
}

// For kernels that give each pair of rows its own `lanes` threads (32, 64 or 128; thread t works
// on rows row0 + 2(t / lanes) and the next): reduces the partial sums of both rows and writes the
// 2 * THREADS / lanes outputs (+ bias).
fn finish_row_pair_lanes(tid: u32, row0: u32, sum_a: f32, sum_b: f32, lanes: u32) {
    let lane = tid % lanes;
    partial[tid] = sum_a;
    partial[THREADS + tid] = sum_b;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[tid] += partial[tid + stride];
            partial[THREADS + tid] += partial[THREADS + tid + stride];
        }
        workgroupBarrier();
    }
    let row = row0 + 2u * (tid / lanes);
    if (lane == 0u) {
        for (var j = 0u; j < 2u; j++) {
            if (row + j < p.n) {
                var y = partial[j * THREADS + tid];
                if (p.has_bias != 0u) {
                    y += bias[row + j];
                }
                out[p.out_col + row + j] = y;
            }
        }
    }
}

// Entry points of every pair kernel, by threads per pair of rows: 32 (8 rows per workgroup), 64
// (4 rows) and 128 (2 rows), so matrices with few rows and long k still fill the GPU; 8 (32
// rows) and 16 (16 rows) for matrices with very many short rows (output heads over a small
// hidden size: Q8_0 / Q5_0 only). engine::shaders::matvec_rows_per_workgroup picks one from the
// matrix shape. Each calls the including kernel's `matvec_pairs(wid, nwg, tid, lanes)`.
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 32u);
}

@compute @workgroup_size(128)
fn lanes64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 64u);
}

@compute @workgroup_size(128)
fn lanes128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 128u);
}

@compute @workgroup_size(128)
fn lanes8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 8u);
}

@compute @workgroup_size(128)
fn lanes16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 16u);
}

// One thread per pair of rows (256 rows per workgroup), for the GPU simulator
// (sim/src/device.rs picks it; the GPU never does): its warps are a CPU core's SIMD lanes, so
// whole rows per lane need no reduction and no idle lanes, and every lane reads the same
// activations at the same time.
@compute @workgroup_size(128)
fn sim_pair_per_thread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs(wid, nwg, tid, 1u);
}
