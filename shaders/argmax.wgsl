// argmax: Argmax -- out[0] = index of the largest of x[offset .. offset + n] (lowest index on
// ties; NaN never wins; 0 when nothing beats -inf), so greedy decoding reads back one u32.
//
// Bindings (group 0):
//   0 uniform ArgmaxParams { n, offset }
//   1 x: array<f32>                  [offset + n]
//   2 out: array<u32> (read_write)   [1]
// Dispatch: one workgroup of 256 threads: strided scan per thread, then a tree reduction.

struct ArgmaxParams {
    n: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> p: ArgmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const NONE: u32 = 0xffffffffu;

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

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    var bv = 0.0;
    var bi = NONE;
    // Strided scan in increasing index order: strict > keeps the lowest index on ties, and NaN
    // compares false. Values must beat -inf, as in the reference scan: `v >= -f32::MAX` is exactly
    // that (false for -inf and NaN), written without an infinite constant, which Tint (Chrome's
    // WGSL compiler) rejects. Four loads per step (in
    // increasing index order) keep enough reads in flight: one workgroup scans 150k logits.
    for (var i0 = lid; i0 < p.n; i0 += 1024u) {
        let last = p.n - 1u;
        let v0 = x[p.offset + i0];
        let v1 = x[p.offset + min(i0 + 256u, last)];
        let v2 = x[p.offset + min(i0 + 512u, last)];
        let v3 = x[p.offset + min(i0 + 768u, last)];
        if ((bi == NONE && v0 >= -0x1.fffffep+127f) || (bi != NONE && v0 > bv)) {
            bv = v0;
            bi = i0;
        }
        if (i0 + 256u <= last && ((bi == NONE && v1 >= -0x1.fffffep+127f) || (bi != NONE && v1 > bv))) {
            bv = v1;
            bi = i0 + 256u;
        }
        if (i0 + 512u <= last && ((bi == NONE && v2 >= -0x1.fffffep+127f) || (bi != NONE && v2 > bv))) {
            bv = v2;
            bi = i0 + 512u;
        }
        if (i0 + 768u <= last && ((bi == NONE && v3 >= -0x1.fffffep+127f) || (bi != NONE && v3 > bv))) {
            bv = v3;
            bi = i0 + 768u;
        }
    }
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
    if (lid == 0u) {
        out[0] = select(best_index[0], 0u, best_index[0] == NONE);
    }
}
