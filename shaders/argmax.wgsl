// argmax: Argmax -- out[0] = index of the largest of x[offset .. offset + n] (lowest index on
// ties; NaN never wins; 0 when nothing beats -inf), so greedy decoding reads back one u32.
//
// Bindings (group 0):
//   0 uniform ArgmaxParams { n, offset }
//   1 x: array<f32>                      [offset + n]
//   2 out: array<u32> (read_write)       [1]
//   3 scratch: array<u32> (read_write)   [2 * ceil(n / CHUNK)] (device-owned; engine::shaders::scratch_bytes)
// Dispatch (two entry points, engine::shaders::plan):
//   `partial`: ceil(n / CHUNK) workgroups of 256 threads (folded into (x <= 65535, y)), each the
//     best (value bits, index) of its CHUNK = 1024 logits into scratch[2g], scratch[2g + 1];
//   `finish`: one workgroup of 256 threads reducing those partials into out[0].
// One workgroup over a 151,936-entry vocabulary took 75 µs on an H200; the partials pass reads
// every logit once with all SMs busy.

#include "common/grid.wgsl"

struct ArgmaxParams {
    n: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<u32>;

const NONE: u32 = 0xffffffffu;
const CHUNK: u32 = 1024u;  // engine::shaders::ARGMAX_CHUNK

var<workgroup> best_value: array<f32, 256>;
var<workgroup> best_index: array<u32, 256>;

// Whether candidate (v, i) beats (bv, bi): larger value, or equal value and lower index.
// NONE marks "nothing found yet", which any real value > -inf beats.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) {
        return false;
    }
    if (bi == NONE) {
        return true;
    }
    return v > bv || (v == bv && i < bi);
}

// Tree reduction of every thread's (value, index) candidate; the winner ends in slot 0.
fn reduce_workgroup(lid: u32, bv: f32, bi: u32) {
    best_value[lid] = bv;
    best_index[lid] = bi;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let v = best_value[lid + stride];
            let i = best_index[lid + stride];
            if (beats(v, i, best_value[lid], best_index[lid])) {
                best_value[lid] = v;
                best_index[lid] = i;
            }
        }
        workgroupBarrier();
    }
}

// Whether logit `v` at index `i` (i within the row) is a candidate: it must beat -inf, as in the
// reference scan: `v >= -f32::MAX` is exactly that (false for -inf and NaN), written without an
// infinite constant, which Tint (Chrome's WGSL compiler) rejects.
fn candidate(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return i < p.n && ((bi == NONE && v >= -0x1.fffffep+127f) || (bi != NONE && v > bv));
}

@compute @workgroup_size(256)
fn partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = linear_workgroup(wid, nwg);
    if (group * CHUNK >= p.n) {
        return;
    }
    // Four loads per thread, all in flight at once, in increasing index order (strict > keeps
    // the lowest index on ties); indices past the end are clamped for the load and never win.
    let i0 = group * CHUNK + lid;
    let last = p.n - 1u;
    let v0 = x[p.offset + min(i0, last)];
    let v1 = x[p.offset + min(i0 + 256u, last)];
    let v2 = x[p.offset + min(i0 + 512u, last)];
    let v3 = x[p.offset + min(i0 + 768u, last)];
    var bv = 0.0;
    var bi = NONE;
    if (candidate(v0, i0, bv, bi)) {
        bv = v0;
        bi = i0;
    }
    if (candidate(v1, i0 + 256u, bv, bi)) {
        bv = v1;
        bi = i0 + 256u;
    }
    if (candidate(v2, i0 + 512u, bv, bi)) {
        bv = v2;
        bi = i0 + 512u;
    }
    if (candidate(v3, i0 + 768u, bv, bi)) {
        bv = v3;
        bi = i0 + 768u;
    }
    reduce_workgroup(lid, bv, bi);
    if (lid == 0u) {
        scratch[2u * group] = bitcast<u32>(best_value[0]);
        scratch[2u * group + 1u] = best_index[0];
    }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    let groups = (p.n + CHUNK - 1u) / CHUNK;
    var bv = 0.0;
    var bi = NONE;
    // Partials in increasing group order, so the first of equal values has the lowest index.
    for (var g = lid; g < groups; g += 256u) {
        let v = bitcast<f32>(scratch[2u * g]);
        let i = scratch[2u * g + 1u];
        if (beats(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    reduce_workgroup(lid, bv, bi);
    if (lid == 0u) {
        out[0] = select(best_index[0], 0u, best_index[0] == NONE);
    }
}
