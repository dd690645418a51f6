// attention: Attention -- causal GQA attention over the KV cache, split-K flash-decoding with an
// online softmax: out[t, h] = softmax(scale * q[t, h] . K[0 ..= pos_offset + t]) V, where query
// head h reads kv head h / (n_heads / n_kv_heads).
//
// Two entry points share one bind group:
//   `partial`: a workgroup takes ROWS query rows that share one kv head (the heads of a GQA group,
//     then consecutive tokens, so K/V are read once for all of them) and one of kv_splits key
//     ranges; it streams the range in tiles of 64 keys, keeping a running max m, sum l and output
//     accumulator per row, and writes (m, l, acc[head_dim]) to `partials`.
//   `combine`: a workgroup per query row merges its kv_splits partials with the usual rescaling.
// Prefill uses the same kernels: each query row masks the keys past its own position.
//
// Bindings (group 0):
//   0 uniform AttentionParams { n_tokens, n_heads, n_kv_heads, head_dim, pos_offset, scale, kv_splits }
//   1 q: array<f32>                        [n_tokens, n_heads, head_dim]
//   2 k_cache: array<f32>                  [ctx, n_kv_heads * head_dim], ctx >= pos_offset + n_tokens
//   3 v_cache: array<f32>                  [ctx, n_kv_heads * head_dim]
//   4 out: array<f32> (read_write)         [n_tokens, n_heads, head_dim]
//   5 partials: array<f32> (read_write)    device scratch [n_tokens * n_heads, kv_splits, head_dim + 2]
// Dispatch (ROWS = min(16, 1024 / head_dim), head_dim <= 1024, workgroup_size 64 for both):
//   partial: (n_kv_heads * ceil(n_tokens * group / ROWS), kv_splits, 1)
//   combine: (n_tokens * n_heads folded into x <= 65535, y)

#include "common/grid.wgsl"

struct AttentionParams {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos_offset: u32,
    scale: f32,
    kv_splits: u32,
}

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

const WORKGROUP: u32 = 64u;
const KEY_TILE: u32 = 64u;
const MAX_ROWS: u32 = 16u;
// Query rows x head_dim held per workgroup; bounds the per-thread accumulator below.
const ROW_ELEMS: u32 = 1024u;
const ACC_PER_THREAD: u32 = ROW_ELEMS / WORKGROUP;
// Stands in for -inf: masked keys never enter the max, and a row that has seen no key yet keeps
// this value with l = 0, so exp(m_old - m_new) stays finite (no inf - inf).
const NO_MAX: f32 = -3.0e38;

var<workgroup> q_rows: array<f32, ROW_ELEMS>;               // [ROWS, head_dim], pre-scaled
var<workgroup> probs: array<f32, 1024>;                     // [MAX_ROWS, KEY_TILE]
var<workgroup> row_max: array<f32, MAX_ROWS>;
var<workgroup> row_sum: array<f32, MAX_ROWS>;
var<workgroup> row_rescale: array<f32, MAX_ROWS>;

fn rows_per_workgroup() -> u32 {
    return min(MAX_ROWS, ROW_ELEMS / p.head_dim);
}

@compute @workgroup_size(64)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d_len = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let rows = rows_per_workgroup();
    let blocks_per_kv_head = (p.n_tokens * group + rows - 1u) / rows;
    let kv_head = wid.x / blocks_per_kv_head;
    let first = (wid.x % blocks_per_kv_head) * rows;   // index into (token, head-in-group) pairs
    let n_rows = min(rows, p.n_tokens * group - first);
    let kv_dim = p.n_kv_heads * d_len;
    let kv_offset = kv_head * d_len;
    let ctx = p.pos_offset + p.n_tokens;
    let span = (ctx + p.kv_splits - 1u) / p.kv_splits;
    let split = wid.y;
    let key_begin = split * span;
    let key_end = min(key_begin + span, ctx);

    // 1. Stage the pre-scaled query rows.
    for (var i = lid; i < n_rows * d_len; i += WORKGROUP) {
        let pair = first + i / d_len;
        let t = pair / group;
        let h = kv_head * group + pair % group;
        q_rows[i] = q[(t * p.n_heads + h) * d_len + i % d_len] * p.scale;
    }
    if (lid < MAX_ROWS) {
        row_max[lid] = NO_MAX;
        row_sum[lid] = 0.0;
    }
    var acc: array<f32, ACC_PER_THREAD>;
    for (var j = 0u; j < ACC_PER_THREAD; j++) {
        acc[j] = 0.0;
    }
    workgroupBarrier();

    for (var tile = key_begin; tile < key_end; tile += KEY_TILE) {
        // 2. Scores: thread lid takes key tile + lid against every row (one pass over its K row).
        let key = tile + lid;
        var scores: array<f32, MAX_ROWS>;
        for (var r = 0u; r < MAX_ROWS; r++) {
            scores[r] = 0.0;
        }
        if (key < key_end) {
            for (var d = 0u; d < d_len; d++) {
                let kd = k_cache[key * kv_dim + kv_offset + d];
                for (var r = 0u; r < n_rows; r++) {
                    scores[r] += q_rows[r * d_len + d] * kd;
                }
            }
        }
        for (var r = 0u; r < n_rows; r++) {
            let t = (first + r) / group;
            let visible = key < key_end && key <= p.pos_offset + t;
            probs[r * KEY_TILE + lid] = select(NO_MAX, scores[r], visible);
        }
        workgroupBarrier();
        // 3. Online softmax update, one thread per row.
        if (lid < n_rows) {
            let base = lid * KEY_TILE;
            let t = (first + lid) / group;
            let limit = min(key_end, p.pos_offset + t + 1u);
            let count = select(0u, limit - tile, limit > tile);
            var m_new = row_max[lid];
            for (var c = 0u; c < min(count, KEY_TILE); c++) {
                m_new = max(m_new, probs[base + c]);
            }
            var sum = 0.0;
            for (var c = 0u; c < KEY_TILE; c++) {
                var e = 0.0;
                if (c < count) {
                    e = exp(probs[base + c] - m_new);
                }
                probs[base + c] = e;
                sum += e;
            }
            let rescale = exp(row_max[lid] - m_new);
            row_rescale[lid] = rescale;
            row_sum[lid] = row_sum[lid] * rescale + sum;
            row_max[lid] = m_new;
        }
        workgroupBarrier();
        // 4. acc = acc * rescale + P V; thread lid owns elements lid, lid + 64, ... of [rows, head_dim].
        let tile_len = min(KEY_TILE, key_end - tile);
        for (var j = 0u; j < ACC_PER_THREAD; j++) {
            let e = lid + j * WORKGROUP;
            if (e < n_rows * d_len) {
                let r = e / d_len;
                let d = e % d_len;
                var a = acc[j] * row_rescale[r];
                for (var c = 0u; c < tile_len; c++) {
                    a += probs[r * KEY_TILE + c] * v_cache[(tile + c) * kv_dim + kv_offset + d];
                }
                acc[j] = a;
            }
        }
        workgroupBarrier();
    }

    // 5. Partial results: (m, l, acc) per (query row, split).
    let stride = d_len + 2u;
    for (var j = 0u; j < ACC_PER_THREAD; j++) {
        let e = lid + j * WORKGROUP;
        if (e < n_rows * d_len) {
            let pair = first + e / d_len;
            let row = (pair / group) * p.n_heads + kv_head * group + pair % group;
            partials[(row * p.kv_splits + split) * stride + 2u + e % d_len] = acc[j];
        }
    }
    if (lid < n_rows) {
        let pair = first + lid;
        let row = (pair / group) * p.n_heads + kv_head * group + pair % group;
        let base = (row * p.kv_splits + split) * stride;
        partials[base] = row_max[lid];
        partials[base + 1u] = row_sum[lid];
    }
}

@compute @workgroup_size(64)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);   // t * n_heads + h
    if (row >= p.n_tokens * p.n_heads) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = row * p.kv_splits * stride;
    var m = NO_MAX;
    for (var s = 0u; s < p.kv_splits; s++) {
        if (partials[base + s * stride + 1u] > 0.0) {
            m = max(m, partials[base + s * stride]);
        }
    }
    var denom = 0.0;
    for (var s = 0u; s < p.kv_splits; s++) {
        let l = partials[base + s * stride + 1u];
        if (l > 0.0) {
            denom += exp(partials[base + s * stride] - m) * l;
        }
    }
    for (var d = lid; d < p.head_dim; d += WORKGROUP) {
        var num = 0.0;
        for (var s = 0u; s < p.kv_splits; s++) {
            let split_base = base + s * stride;
            if (partials[split_base + 1u] > 0.0) {
                num += exp(partials[split_base] - m) * partials[split_base + 2u + d];
            }
        }
        out[row * p.head_dim + d] = select(0.0, num / denom, denom > 0.0);
    }
}
