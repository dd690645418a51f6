// Body of embed_<format>.wgsl: gathers rows of a (possibly quantized) embedding table. The file
// that includes this also includes the format's `dequant8`.
struct EmbedParams {
    n_tokens: u32,
    hidden: u32,
    // This table part holds vocabulary rows first_row .. first_row + n_rows; ids outside that
    // range are left to the other parts (tables over the binding limit are split by rows).
    first_row: u32,
    n_rows: u32,
}

@group(0) @binding(0) var<uniform> p: EmbedParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;     // packed [n_rows, hidden]
@group(0) @binding(2) var<storage, read> ids: array<u32>;         // [n_tokens]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [n_tokens, hidden]

const WORKGROUP: u32 = 64u;

// One thread per 8 columns: x folds ceil(ceil(hidden / 8) / 64) workgroups, y = token.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    let group = wid.x * WORKGROUP + lid;
    let col = group * 8u;
    if (t >= p.n_tokens || col >= p.hidden) {
        return;
    }
    let id = ids[t];
    if (id < p.first_row || id - p.first_row >= p.n_rows) {
        return;
    }
    let w = dequant8(id - p.first_row, group, p.n_rows, p.hidden);
    let values = array<f32, 8>(w.lo.x, w.lo.y, w.lo.z, w.lo.w, w.hi.x, w.hi.y, w.hi.z, w.hi.w);
    let base = t * p.hidden;
    for (var e = 0u; e < 8u; e++) {
        if (col + e < p.hidden) {
            out[base + col + e] = values[e];
        }
    }
}
