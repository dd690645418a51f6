// Activation planes for the planes matvecs (matvec_planes_<format>.wgsl): binding 5, the
// `quantize` entry point and the group dot product. Needs common/matvec_rows.wgsl.
//
// x = s (a + b / 2^8 + c / 2^16) per 16-element group, s = 2^(exponent of the group's largest
// |x| - 5): a in -64..64 (signed bytes), b and c in 0..255. Layout in `planes` (G = k / 16
// groups): vec4 3g, 3g + 1, 3g + 2 hold planes a, b, c of group g (byte e of word j = element
// 4j + e); from vec4 3G, two words per group: s (f32 bits) and the group's f32 sum of x.

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

// sum(q x) over one group: `q` its 16 weights as bytes 0..63 (4 per word). A * 2^8 + B stays
// below 2^24 (|A| <= 16 * 63 * 64, B <= 16 * 63 * 255: 16,772,112), so f32 holds it exactly:
// one rounding, in the add; s / 2^8 then scales exactly.
fn group_dot(q: vec4<u32>, x: Group) -> f32 {
    let da = (dot4I8Packed(q.x, x.a.x) + dot4I8Packed(q.y, x.a.y)) + (dot4I8Packed(q.z, x.a.z) + dot4I8Packed(q.w, x.a.w));
    let db = (dot4U8Packed(q.x, x.b.x) + dot4U8Packed(q.y, x.b.y)) + (dot4U8Packed(q.z, x.b.z) + dot4U8Packed(q.w, x.b.w));
    let dc = (dot4U8Packed(q.x, x.c.x) + dot4U8Packed(q.y, x.c.y)) + (dot4U8Packed(q.z, x.c.z) + dot4U8Packed(q.w, x.c.w));
    return (f32(da * 256 + i32(db)) + f32(dc) * (1.0 / 256.0)) * (x.side.x * (1.0 / 256.0));
}

