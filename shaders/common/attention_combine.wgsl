// `combine` of the split-K attention kernels: a workgroup of WORKGROUP threads per query row
// (t * n_heads + h) merges the row's kv_splits partials (m, l, acc[head_dim]) with the usual
// rescaling; splits that saw no key (l == 0) are skipped. Needs p, partial_at (the partials,
// f32), out, NO_MAX, WORKGROUP and linear_workgroup (common/grid.wgsl) from the including kernel.
@compute @workgroup_size(64)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.n_tokens * p.n_heads) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = row * p.kv_splits * stride;
    let stats = split_stats(base, stride);
    let m = stats.x;
    let denom = stats.y;
    for (var d = lid; d < p.head_dim; d += WORKGROUP) {
        var num = 0.0;
        for (var s = 0u; s < p.kv_splits; s++) {
            let split_base = base + s * stride;
            if (partial_at(split_base + 1u) > 0.0) {
                num += exp(partial_at(split_base) - m) * partial_at(split_base + 2u + d);
            }
        }
        out[row * p.head_dim + d] = select(0.0, num / denom, denom > 0.0);
    }
}

// (m, denominator) of a row's splits from `base`: the largest split max among the splits that saw
// keys, and the sum of their l rescaled to it.
fn split_stats(base: u32, stride: u32) -> vec2<f32> {
    var m = NO_MAX;
    for (var s = 0u; s < p.kv_splits; s++) {
        if (partial_at(base + s * stride + 1u) > 0.0) {
            m = max(m, partial_at(base + s * stride));
        }
    }
    var denom = 0.0;
    for (var s = 0u; s < p.kv_splits; s++) {
        let l = partial_at(base + s * stride + 1u);
        if (l > 0.0) {
            denom += exp(partial_at(base + s * stride) - m) * l;
        }
    }
    return vec2<f32>(m, denom);
}
