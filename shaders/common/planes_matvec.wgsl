// The planes matvecs' side of the activation planes (matvec_planes_<format>.wgsl): binding 5,
// the `quantize` entry point that writes the planes of row x_row of x (common/planes.wgsl for
// the encoding and layout) and the group dot product. Needs common/matvec_rows.wgsl.

#include "common/planes.wgsl"

@group(0) @binding(5) var<storage, read_write> planes: array<vec4<u32>>;

const QUANTIZE_THREADS: u32 = 256u;  // 4 threads per group of 16 elements

@compute @workgroup_size(256)
fn quantize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let groups = p.k / GROUP_ELEMENTS;
    let quarter = linear_workgroup(wid, nwg) * QUANTIZE_THREADS + tid;
    let live = quarter / 4u < groups;
    var v = vec4<f32>(0.0);
    if (live) {
        v = x[p.x_row * (p.k / 4u) + quarter];
    }
    write_row_quarter(tid, live, groups, quarter, v);
}

// The planes of one group (a, b, c: 4 words each) and its (s, sum of x).
struct Group {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    side: vec2<f32>,
}

fn load_group(g: u32) -> Group {
    let groups = p.k / GROUP_ELEMENTS;
    let slot = group_slot(g);
    let w = planes[3u * groups + slot / 2u];
    let side = bitcast<vec2<f32>>(select(w.xy, w.zw, slot % 2u == 1u));
    return Group(planes[slot], planes[groups + slot], planes[2u * groups + slot], side);
}

// sum(q x) over one group: `q` its 16 weights as bytes 0..63 (4 per word). A * 2^8 + B stays
// below 2^24 (|A| <= 16 * 63 * 64, B <= 16 * 63 * 255: 16,772,112), so f32 holds it exactly:
// one rounding, in the add; s / 2^8 then scales exactly.
fn group_dot(q: vec4<u32>, x: Group) -> f32 {
    let da = (dot4I8Packed(q.x, x.a.x) + dot4I8Packed(q.y, x.a.y)) + (dot4I8Packed(q.z, x.a.z) + dot4I8Packed(q.w, x.a.w));
    let db = (dot4U8Packed(q.x, x.b.x) + dot4U8Packed(q.y, x.b.y)) + (dot4U8Packed(q.z, x.b.z) + dot4U8Packed(q.w, x.b.w));
    let dc = (dot4U8Packed(q.x, x.c.x) + dot4U8Packed(q.y, x.c.y)) + (dot4U8Packed(q.z, x.c.z) + dot4U8Packed(q.w, x.c.w));
    return (f32(da * 256 + i32(db)) + f32(dc) * (1.0 / 256.0)) * (x.side.x * (1.0 / 256.0));
}

