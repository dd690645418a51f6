// Activation planes for the planes matvecs (common/planes_matvec.wgsl): how a group of 16 f32
// activations becomes three byte planes, and `write_row_quarter` for kernels that write the
// planes of a row they produce (add_rms_norm.wgsl, swiglu.wgsl `planes` entry points, so the
// matvec after them skips its `quantize` dispatch: engine::shaders::pass_plans). The including
// file declares the read_write `planes: array<vec4<u32>>` binding (the device scratch).
//
// x = s (a + b / 2^8 + c / 2^16) per 16-element group, s = 2^(exponent of the group's largest
// |x| - 5): a in -64..64 (signed bytes), b and c in 0..255. Layout in `planes` (G = k / 16
// groups, k a multiple of 256): plane-major, vec4 P G + slot(g) holds plane P (a, b, c) of group
// g (byte e of word j = element 4j + e); from vec4 3G, two words at slot(g): s (f32 bits) and the
// group's f32 sum of x. `group_slot` orders each 256-element block's 16 groups as a Q4_K slot
// reads them (the low-nibble groups 0, 1, 4, 5, .. first), so the 32 threads of a Q4_K matvec
// load one plane of their groups as four whole 128-byte lines, not scattered 16-byte pieces
// (the loads of the activation planes, not the weights, bound these matvecs).

const GROUP_ELEMENTS: u32 = 16u;

// Where group `g` lies in each plane: within its 256-element block, groups 4c + h (h = 0, 1) at
// 2c + h and groups 4c + 2 + h at 8 + 2c + h.
fn group_slot(g: u32) -> u32 {
    return (g & ~15u) | (((g >> 1u) & 1u) << 3u) | (((g >> 2u) & 3u) << 1u) | (g & 1u);
}

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

// The power-of-two exponent e of a group's scale s = 2^e from its largest |x| `m`: s = 2^(exponent
// of m - 5), so |x| / s < 64; clamped to normal powers of two (|x| below 2^-120 keeps fewer bits;
// such activations do not occur).
fn group_exponent(m: f32) -> i32 {
    let e_m = i32((bitcast<u32>(m) >> 23u) & 0xffu) - 127;
    return clamp(e_m - 5, -120, 125);
}

// Writes (s, sum) of group `g` of a row of `groups` groups. A non-finite group (m = inf or NaN)
// gets s = NaN, so its rows come out NaN as in f32.
fn write_group_side(groups: u32, g: u32, e: i32, m: f32, sum: f32) {
    let s = pow2(e) * (1.0 + (m - m));
    let slot = group_slot(g);
    let side = 3u * groups + slot / 2u;
    planes[side][2u * (slot % 2u)] = bitcast<u32>(s);
    planes[side][2u * (slot % 2u) + 1u] = bitcast<u32>(sum);
}

// Quarter `j` (elements 16g + 4j .. + 3 = `v`) of group `g` of a row of `groups` groups, from
// the thread that holds it, given the group's largest |x| `m` and its sum (the four quarters'
// pairwise sums, summed pairwise); quarter 0 also writes the group's (s, sum). Called by
// `write_row_quarter`, which exchanges (max, sum) among the group's four threads.
fn write_quarter(groups: u32, g: u32, j: u32, v: vec4<f32>, m: f32, sum: f32) {
    let e = group_exponent(m);
    write_quarter_planes(groups, g, j, element_planes(v * pow2(-e)));
    if (j == 0u) {
        write_group_side(groups, g, e, m, sum);
    }
}

// The plane bytes of elements 4j..4j + 3 of group `g` of a row of `groups` groups.
fn write_quarter_planes(groups: u32, g: u32, j: u32, q: array<vec4<i32>, 3>) {
    let slot = group_slot(g);
    planes[slot][j] = pack_bytes(q[0]);
    planes[groups + slot][j] = pack_bytes(q[1]);
    planes[2u * groups + slot][j] = pack_bytes(q[2]);
}

// (largest |x|, pairwise sum) of a quarter, for the exchange before `write_quarter`.
fn quarter_stats(v: vec4<f32>) -> vec2<f32> {
    let a = abs(v);
    return vec2<f32>(max(max(a.x, a.y), max(a.z, a.w)), (v.x + v.y) + (v.z + v.w));
}

var<workgroup> quarter_stats_of: array<vec2<f32>, 256>;

// Quarter `q` (elements 4q .. 4q + 3 = `v`) of a row of `groups` groups, held by thread `lid`
// of a 256-thread workgroup whose four consecutive threads hold each group: their (max, sum)
// exchanged in workgroup memory, then `write_quarter`. Uniform control flow (a barrier);
// threads past the row pass `live` false.
fn write_row_quarter(lid: u32, live: bool, groups: u32, q: u32, v: vec4<f32>) {
    quarter_stats_of[lid] = quarter_stats(v);
    workgroupBarrier();
    if (live) {
        let first = lid - lid % 4u;
        let gs = group_stats(quarter_stats_of[first], quarter_stats_of[first + 1u], quarter_stats_of[first + 2u], quarter_stats_of[first + 3u]);
        write_quarter(groups, q / 4u, q % 4u, v, gs.x, gs.y);
    }
}

// (m, sum) of a group from its four quarters' `quarter_stats`.
fn group_stats(s0: vec2<f32>, s1: vec2<f32>, s2: vec2<f32>, s3: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(max(max(s0.x, s1.x), max(s2.x, s3.x)), (s0.y + s1.y) + (s2.y + s3.y));
}
