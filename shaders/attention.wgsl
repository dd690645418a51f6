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
//   `decode`: `partial` for one query token (head_dim <= 256, even): a workgroup per (query head,
//     split), so a decode step runs n_heads x kv_splits workgroups instead of n_kv_heads x
//     kv_splits (8 on Llama-3-8B at short contexts, which left the GPU idle); two threads per key
//     share a score, every thread holds the softmax state, thread i owns elements i + 64 j.
//   `prefill`: tiled causal attention for n_tokens > 1 and head_dim <= 128 (see its section
//     below): a workgroup owns 16 query rows of one kv head (GQA group x consecutive tokens) and
//     walks 32-key tiles up to its causal limit, K staged in workgroup memory, 4 x 2 score blocks
//     and 4 rows x ceil(head_dim / 16) output elements per thread, online softmax; with one split
//     it writes `out` directly, else partials for `combine`.
//   `prefill_wide`: the same for head_dim <= 128 and a multiple of 4 on devices with 24 KiB of
//     workgroup memory (see its section): 64 query rows per 128-thread workgroup, 16-key tiles.
// Prefill with head_dim > 128 uses `partial` + `combine`: each query row masks the keys past its
// own position.
//
// Bindings (group 0):
//   0 uniform AttentionParams { n_tokens, n_heads, n_kv_heads, head_dim, pos_offset, scale, kv_splits }
//   1 q: array<f32>                        [n_tokens, n_heads, head_dim]
//   2 k_cache: array<f32>                  [ctx, n_kv_heads * head_dim], ctx >= pos_offset + n_tokens
//   3 v_cache: array<f32>                  [ctx, n_kv_heads * head_dim]
//   4 out: array<f32> (read_write)         [n_tokens, n_heads, head_dim]
//   5 partials: array<f32> (read_write)    device scratch [n_tokens * n_heads, kv_splits, head_dim + 2]
//                                          (unused by `prefill` with one split)
// Dispatch (ROWS = min(16, 1024 / head_dim), head_dim <= 1024, workgroup_size 64 unless noted):
//   partial: (n_kv_heads * ceil(n_tokens * group / ROWS), kv_splits, 1)
//   combine: (n_tokens * n_heads folded into x <= 65535, y)
//   decode (n_tokens == 1): (n_heads, kv_splits, 1), then combine
//   prefill (n_tokens > 1, head_dim <= 128): (n_kv_heads * ceil(n_tokens * group / 16), kv_splits, 1),
//     then combine only when kv_splits > 1
//   prefill_wide (workgroup_size 128): (n_kv_heads * ceil(n_tokens * group / 64), kv_splits, 1),
//     then combine only when kv_splits > 1

#include "common/grid.wgsl"
#include "common/attention_params.wgsl"

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

fn partial_at(i: u32) -> f32 {
    return partials[i];
}

#include "common/attention_combine.wgsl"

const DECODE_TILE: u32 = 32u;      // keys per step: 2 threads per key
const DECODE_MAX_DIM: u32 = 256u;  // 4 accumulators per thread

var<workgroup> decode_q: array<f32, DECODE_MAX_DIM>;  // the query row, pre-scaled
var<workgroup> half_scores: array<f32, 64>;         // [key][half] partial dot products
var<workgroup> decode_probs: array<f32, DECODE_TILE>;

// probs . V[tile .. tile + n_keys, d] and [.., d + 64] (d + 64 only when `two`), four keys per
// step so eight loads are in flight (a one-key loop waited a full memory round trip per key).
fn pv2(d: u32, two: bool, tile: u32, n_keys: u32, kv_dim: u32, kv_offset: u32) -> vec2<f32> {
    let d1 = select(d, d + 64u, two);
    var sum = vec2<f32>(0.0);
    var c = 0u;
    for (; c + 4u <= n_keys; c += 4u) {
        let r = (tile + c) * kv_dim + kv_offset;
        let probs = vec4<f32>(decode_probs[c], decode_probs[c + 1u], decode_probs[c + 2u], decode_probs[c + 3u]);
        let va = vec4<f32>(v_cache[r + d], v_cache[r + kv_dim + d], v_cache[r + 2u * kv_dim + d], v_cache[r + 3u * kv_dim + d]);
        let vb = vec4<f32>(v_cache[r + d1], v_cache[r + kv_dim + d1], v_cache[r + 2u * kv_dim + d1], v_cache[r + 3u * kv_dim + d1]);
        sum += vec2<f32>(dot(probs, va), dot(probs, vb));
    }
    for (; c < n_keys; c++) {
        let r = (tile + c) * kv_dim + kv_offset;
        sum += decode_probs[c] * vec2<f32>(v_cache[r + d], v_cache[r + d1]);
    }
    return sum;
}

@compute @workgroup_size(64)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d_len = p.head_dim;
    let h = wid.x;
    let group = p.n_heads / p.n_kv_heads;
    let kv_dim = p.n_kv_heads * d_len;
    let kv_offset = (h / group) * d_len;
    let ctx = p.pos_offset + 1u;
    let span = (ctx + p.kv_splits - 1u) / p.kv_splits;
    let split = wid.y;
    let key_begin = split * span;
    let key_end = min(key_begin + span, ctx);
    for (var i = lid; i < d_len; i += WORKGROUP) {
        decode_q[i] = q[h * d_len + i] * p.scale;
    }
    workgroupBarrier();
    let half_len = d_len / 2u;
    let my_key = lid / 2u;
    let q_base = (lid % 2u) * half_len;
    var m = NO_MAX;
    var l = 0.0;
    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    for (var tile = key_begin; tile < key_end; tile += DECODE_TILE) {
        let n_keys = min(DECODE_TILE, key_end - tile);
        var s = 0.0;
        if (my_key < n_keys) {
            let k_base = (tile + my_key) * kv_dim + kv_offset + q_base;
            var d = 0u;
            // Eight independent loads per step keep the memory pipe busy.
            for (; d + 8u <= half_len; d += 8u) {
                let qa = vec4<f32>(decode_q[q_base + d], decode_q[q_base + d + 1u], decode_q[q_base + d + 2u], decode_q[q_base + d + 3u]);
                let qb = vec4<f32>(decode_q[q_base + d + 4u], decode_q[q_base + d + 5u], decode_q[q_base + d + 6u], decode_q[q_base + d + 7u]);
                let ka = vec4<f32>(k_cache[k_base + d], k_cache[k_base + d + 1u], k_cache[k_base + d + 2u], k_cache[k_base + d + 3u]);
                let kb = vec4<f32>(k_cache[k_base + d + 4u], k_cache[k_base + d + 5u], k_cache[k_base + d + 6u], k_cache[k_base + d + 7u]);
                s += dot(qa, ka) + dot(qb, kb);
            }
            for (; d < half_len; d++) {
                s += decode_q[q_base + d] * k_cache[k_base + d];
            }
        }
        half_scores[lid] = s;
        workgroupBarrier();
        // Every thread derives the same softmax state from the 32 scores (broadcast reads).
        var m_tile = m;
        for (var c = 0u; c < n_keys; c++) {
            m_tile = max(m_tile, half_scores[2u * c] + half_scores[2u * c + 1u]);
        }
        if (lid < DECODE_TILE) {
            let score = half_scores[2u * lid] + half_scores[2u * lid + 1u];
            decode_probs[lid] = select(0.0, exp(score - m_tile), lid < n_keys);
        }
        workgroupBarrier();
        var sum = 0.0;
        for (var c = 0u; c < n_keys; c++) {
            sum += decode_probs[c];
        }
        let rescale = exp(m - m_tile);
        l = l * rescale + sum;
        m = m_tile;
        // Elements lid and lid + 64 (when head_dim > 64), then lid + 128 and lid + 192.
        let low = pv2(min(lid, d_len - 1u), lid + 64u < d_len, tile, n_keys, kv_dim, kv_offset);
        acc0 = acc0 * rescale + low.x;
        acc1 = acc1 * rescale + low.y;
        if (d_len > 128u) {
            let high = pv2(min(lid + 128u, d_len - 1u), lid + 192u < d_len, tile, n_keys, kv_dim, kv_offset);
            acc2 = acc2 * rescale + high.x;
            acc3 = acc3 * rescale + high.y;
        }
        // The next tile overwrites half_scores and decode_probs.
        workgroupBarrier();
    }
    let stride = d_len + 2u;
    let base = (h * p.kv_splits + split) * stride;
    if (lid == 0u) {
        partials[base] = m;
        partials[base + 1u] = l;
    }
    let accs = array<f32, 4>(acc0, acc1, acc2, acc3);
    for (var j = 0u; j < 4u; j++) {
        let d = lid + 64u * j;
        if (d < d_len) {
            partials[base + 2u + d] = accs[j];
        }
    }
}

// ---- prefill: tiled causal attention (n_tokens > 1, head_dim <= 128) ----
//
// A workgroup of 64 threads owns PREFILL_ROWS = 16 query rows that share one kv head (pairs
// (token, head of the GQA group) in `partial`'s order) and walks the key tiles of its split from
// the first key up to its last row's causal limit (no tile past it is read; only tiles that cross
// a row's limit are masked, by the same compare that masks the end of the range). Per 32-key tile:
//   - K is staged transposed in 32-dim chunks (k_tile[dim][key], stride 33: conflict-free writes
//     and reads); the pre-scaled query rows sit in workgroup memory for the whole walk,
//     transposed so one vec4 holds a dim of the 4 rows a thread owns;
//   - thread (col = lid % 16, grp = lid / 16) computes a 4 x 2 register block of scores: rows
//     grp + 4 i (i < 4, a vec4) against keys col and col + 16;
//   - online softmax: the tile's row max is reduced through `prefill_red` (16 partial maxima per
//     row), every thread of a row derives the same running max m; each thread keeps its own
//     partial sum l over its keys (summed once at the end);
//   - P goes to workgroup memory (prefill_p[key][grp] = the 4 rows' probabilities), and the thread
//     accumulates the rows' outputs for dims col + 16 j (j < ceil(head_dim / 16) <= 8) in
//     registers, reading V straight from the cache (16 threads read 16 consecutive floats), 8 keys
//     per step over the whole 32-key tile (keys past the range have P = 0 and a clamped V row),
//     so the 8 loads of a step are issued together (H200 pp512 vs 2 keys per step over n_keys:
//     0.5B 16,100 -> 17,930 tok/s, qwen3-0.6b 11,130 -> 13,370, 8B 1,972 -> 2,093).
// With kv_splits == 1 it writes `out` itself (no combine); else (m, l, acc) partials like `partial`.
// Workgroup memory: 2048 + 1056 + 512 + 256 floats = 15,488 bytes.

const PREFILL_ROWS: u32 = 16u;
const PREFILL_KEYS: u32 = 32u;       // keys per tile
const PREFILL_CHUNK: u32 = 32u;      // K dims staged at a time
const PREFILL_STRIDE: u32 = 33u;     // k_tile row stride (one pad word)
const PREFILL_MAX_DIM: u32 = 128u;
const PREFILL_COLS: u32 = 16u;       // threads sharing a row group

var<workgroup> prefill_q: array<vec4<f32>, 512>;          // [head_dim rounded to 4][grp] rows grp + 4 i
var<workgroup> prefill_k: array<f32, 1056>;               // [PREFILL_CHUNK][PREFILL_STRIDE]
var<workgroup> prefill_p: array<vec4<f32>, 128>;          // [PREFILL_KEYS][grp]
var<workgroup> prefill_red: array<vec4<f32>, 64>;         // [col][grp]

@compute @workgroup_size(64)
fn prefill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d_len = p.head_dim;
    let d4 = (d_len + 3u) & ~3u;
    let group = p.n_heads / p.n_kv_heads;
    let blocks_per_kv_head = (p.n_tokens * group + PREFILL_ROWS - 1u) / PREFILL_ROWS;
    let kv_head = wid.x / blocks_per_kv_head;
    let first = (wid.x % blocks_per_kv_head) * PREFILL_ROWS;   // index into (token, head-in-group) pairs
    let n_rows = min(PREFILL_ROWS, p.n_tokens * group - first);
    let kv_dim = p.n_kv_heads * d_len;
    let kv_offset = kv_head * d_len;
    let ctx = p.pos_offset + p.n_tokens;
    let span = (ctx + p.kv_splits - 1u) / p.kv_splits;
    let split = wid.y;
    let key_begin = split * span;
    // The last row's causal limit bounds the walk; keys past it are never read.
    let last_token = (first + n_rows - 1u) / group;
    let key_end = min(min(key_begin + span, ctx), p.pos_offset + last_token + 1u);

    let col = lid % PREFILL_COLS;
    let grp = lid / PREFILL_COLS;
    // Row i of this thread: pair first + grp + 4 i; it sees keys < limit[i] (0 for padding rows).
    var limit = vec4<u32>(0u);
    for (var i = 0u; i < 4u; i++) {
        let r = grp + 4u * i;
        if (r < n_rows) {
            limit[i] = p.pos_offset + (first + r) / group + 1u;
        }
    }
    let limit_end = min(limit, vec4<u32>(key_end));

    // 1. Stage the pre-scaled query rows, transposed: prefill_q[d * 4 + g] = rows g + 4 i at dim d.
    for (var e = lid; e < d4 * 4u; e += WORKGROUP) {
        let d = e / 4u;
        let g = e % 4u;
        var v = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
            let r = g + 4u * i;
            if (r < n_rows && d < d_len) {
                let pair = first + r;
                let h = kv_head * group + pair % group;
                v[i] = q[((pair / group) * p.n_heads + h) * d_len + d] * p.scale;
            }
        }
        prefill_q[e] = v;
    }

    var m = vec4<f32>(NO_MAX);
    var l = vec4<f32>(0.0);
    var acc: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    let n_dim_blocks = (d_len + PREFILL_COLS - 1u) / PREFILL_COLS;

    for (var tile = key_begin; tile < key_end; tile += PREFILL_KEYS) {
        let n_keys = min(PREFILL_KEYS, key_end - tile);
        // 2. Scores of rows grp + 4 i against keys col and col + 16, K staged dim chunk by chunk.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var d0 = 0u; d0 < d4; d0 += PREFILL_CHUNK) {
            workgroupBarrier();   // the previous chunk's readers are done (and, first, the q staging)
            for (var e = lid; e < PREFILL_CHUNK * PREFILL_KEYS; e += WORKGROUP) {
                let dd = e % PREFILL_CHUNK;
                let key = e / PREFILL_CHUNK;
                var kv = 0.0;
                if (key < n_keys && d0 + dd < d_len) {
                    kv = k_cache[(tile + key) * kv_dim + kv_offset + d0 + dd];
                }
                prefill_k[dd * PREFILL_STRIDE + key] = kv;
            }
            workgroupBarrier();
            let chunk = min(PREFILL_CHUNK, d4 - d0);
            for (var dd = 0u; dd < chunk; dd += 4u) {
                let qi = (d0 + dd) * 4u + grp;
                let kb = dd * PREFILL_STRIDE + col;
                let qa = prefill_q[qi];
                let qb = prefill_q[qi + 4u];
                let qc = prefill_q[qi + 8u];
                let qd = prefill_q[qi + 12u];
                s0 += qa * prefill_k[kb] + qb * prefill_k[kb + PREFILL_STRIDE]
                    + qc * prefill_k[kb + 2u * PREFILL_STRIDE] + qd * prefill_k[kb + 3u * PREFILL_STRIDE];
                s1 += qa * prefill_k[kb + 16u] + qb * prefill_k[kb + PREFILL_STRIDE + 16u]
                    + qc * prefill_k[kb + 2u * PREFILL_STRIDE + 16u] + qd * prefill_k[kb + 3u * PREFILL_STRIDE + 16u];
            }
        }
        // 3. Causal / range mask, then the tile's row max over the 16 threads of the row group.
        let vis0 = vec4<u32>(tile + col) < limit_end;
        let vis1 = vec4<u32>(tile + col + 16u) < limit_end;
        s0 = select(vec4<f32>(NO_MAX), s0, vis0);
        s1 = select(vec4<f32>(NO_MAX), s1, vis1);
        prefill_red[col * 4u + grp] = max(s0, s1);
        workgroupBarrier();
        var m_new = m;
        for (var c = 0u; c < PREFILL_COLS; c++) {
            m_new = max(m_new, prefill_red[c * 4u + grp]);
        }
        let p0 = select(vec4<f32>(0.0), exp(s0 - m_new), vis0);
        let p1 = select(vec4<f32>(0.0), exp(s1 - m_new), vis1);
        prefill_p[col * 4u + grp] = p0;
        prefill_p[(col + 16u) * 4u + grp] = p1;
        let rescale = exp(m - m_new);
        l = l * rescale + p0 + p1;
        m = m_new;
        workgroupBarrier();
        // 4. acc = acc * rescale + P V for dims col + 16 j; keys past n_keys have P = 0 (their V
        //    row is clamped to the last key, so it is a real value).
        for (var j = 0u; j < 8u; j++) {
            acc[j] *= rescale;
        }
        for (var c = 0u; c < PREFILL_KEYS; c += 8u) {
            let last = n_keys - 1u;
            var pk: array<vec4<f32>, 8>;   // P of keys c .. c + 7 for this thread's 4 rows
            var rk: array<u32, 8>;         // their V rows
            for (var i = 0u; i < 8u; i++) {
                pk[i] = prefill_p[(c + i) * 4u + grp];
                rk[i] = (tile + min(c + i, last)) * kv_dim + kv_offset;
            }
            for (var j = 0u; j < 8u; j++) {
                if (j < n_dim_blocks) {
                    let d = min(col + PREFILL_COLS * j, d_len - 1u);
                    acc[j] += pk[0] * v_cache[rk[0] + d] + pk[1] * v_cache[rk[1] + d] + pk[2] * v_cache[rk[2] + d]
                        + pk[3] * v_cache[rk[3] + d] + pk[4] * v_cache[rk[4] + d] + pk[5] * v_cache[rk[5] + d]
                        + pk[6] * v_cache[rk[6] + d] + pk[7] * v_cache[rk[7] + d];
                }
            }
        }
    }

    // 5. Row sums over the 16 threads of a row group, then out (one split) or partials.
    workgroupBarrier();
    prefill_red[col * 4u + grp] = l;
    workgroupBarrier();
    var l_sum = vec4<f32>(0.0);
    for (var c = 0u; c < PREFILL_COLS; c++) {
        l_sum += prefill_red[c * 4u + grp];
    }
    let stride = d_len + 2u;
    for (var i = 0u; i < 4u; i++) {
        let r = grp + 4u * i;
        if (r >= n_rows) {
            continue;
        }
        let pair = first + r;
        let row = (pair / group) * p.n_heads + kv_head * group + pair % group;
        if (p.kv_splits == 1u) {
            let inv = 1.0 / l_sum[i];
            for (var j = 0u; j < 8u; j++) {
                let d = col + PREFILL_COLS * j;
                if (d < d_len) {
                    out[row * d_len + d] = acc[j][i] * inv;
                }
            }
        } else {
            let base = (row * p.kv_splits + split) * stride;
            if (col == 0u) {
                partials[base] = m[i];
                partials[base + 1u] = l_sum[i];
            }
            for (var j = 0u; j < 8u; j++) {
                let d = col + PREFILL_COLS * j;
                if (d < d_len) {
                    partials[base + 2u + d] = acc[j][i];
                }
            }
        }
    }
}


// ---- prefill_wide: causal attention with 64 query rows a workgroup (n_tokens > 1,
// head_dim <= 128 and a multiple of 4; devices with 24 KiB of workgroup memory) ----
//
// `prefill` stages 16 query rows per 64-thread workgroup: K and V are fetched for every 16 rows.
// Here a workgroup of 128 threads owns 64 rows (pairs (token, head of the GQA group) in
// `partial`'s order: with GQA 4, 16 tokens x 4 heads share one K / V tile) and two threads own a
// row. Per 16-key tile, K and V rows are staged once, zero-padded to 128 dims (row-major vec4s:
// a warp reads two addresses at a time, a broadcast). A thread holds 64 dims of its pre-scaled
// query row and of its output accumulator as `Dims64` (sixteen named vec4s, so they stay in
// registers: private arrays indexed in loops went to local memory and ran 2x slower than
// `prefill`). The pair splits the work by head_dim:
//   - head_dim <= 64: by keys. Each thread walks every other key of a tile (keys sub, sub + 2,
//     ..) with its own online softmax (m, l, acc); the two states are merged at the end.
//   - head_dim 68..128: by dims (thread sub has dims 64 sub ..): each writes the half score of
//     every key to `wide_x`, both sum the pair's halves (lower half first, so both threads hold
//     the same scores and the same softmax state) and add P V on their own dims.
// Workgroups take their kv head's row blocks last first (the rows with the most keys start in the
// first wave). One split writes `out`; several write (m, l, acc) partials like `partial`.
// Workgroup memory: 2 x 8 KiB tiles + 8 KiB scores = 24 KiB (engine::shaders::WIDE_PREFILL_ATTENTION_BYTES).
// Dispatch: (n_kv_heads * ceil(n_tokens * group / 64), kv_splits, 1), then `combine` when kv_splits > 1.

const WIDE_ROWS: u32 = 64u;
const WIDE_KEYS: u32 = 16u;        // keys per tile
const WIDE_THREADS: u32 = 128u;
const WIDE_ROW_VECS: u32 = 32u;    // vec4 per staged key row (head_dim <= 128, zero-padded)

var<workgroup> wide_k: array<vec4<f32>, 512>;   // [WIDE_KEYS][WIDE_ROW_VECS]; after the walk: partner states
var<workgroup> wide_v: array<vec4<f32>, 512>;   // [WIDE_KEYS][WIDE_ROW_VECS]
var<workgroup> wide_x: array<f32, 2048>;        // [WIDE_KEYS][thread] scores

// 64 consecutive dims of one row.
struct Dims64 {
    d0: vec4<f32>,
    d1: vec4<f32>,
    d2: vec4<f32>,
    d3: vec4<f32>,
    d4: vec4<f32>,
    d5: vec4<f32>,
    d6: vec4<f32>,
    d7: vec4<f32>,
    d8: vec4<f32>,
    d9: vec4<f32>,
    d10: vec4<f32>,
    d11: vec4<f32>,
    d12: vec4<f32>,
    d13: vec4<f32>,
    d14: vec4<f32>,
    d15: vec4<f32>,
}

// Query dims 4 (v0 + j) .. of row `base` (zero past head_dim), pre-scaled.
fn wide_q4(base: u32, v: u32) -> vec4<f32> {
    if (4u * v >= p.head_dim) {
        return vec4<f32>(0.0);
    }
    let e = base + 4u * v;
    return vec4<f32>(q[e], q[e + 1u], q[e + 2u], q[e + 3u]) * p.scale;
}

fn wide_load_q(base: u32, v0: u32) -> Dims64 {
    return Dims64(wide_q4(base, v0 + 0u), wide_q4(base, v0 + 1u), wide_q4(base, v0 + 2u), wide_q4(base, v0 + 3u), wide_q4(base, v0 + 4u), wide_q4(base, v0 + 5u), wide_q4(base, v0 + 6u), wide_q4(base, v0 + 7u), wide_q4(base, v0 + 8u), wide_q4(base, v0 + 9u), wide_q4(base, v0 + 10u), wide_q4(base, v0 + 11u), wide_q4(base, v0 + 12u), wide_q4(base, v0 + 13u), wide_q4(base, v0 + 14u), wide_q4(base, v0 + 15u));
}

// x . wide_k[at .. at + 16] (four partial sums in flight).
fn wide_dot(x: Dims64, at: u32) -> f32 {
    let s0 = x.d0 * wide_k[at + 0u] + x.d1 * wide_k[at + 1u] + x.d2 * wide_k[at + 2u] + x.d3 * wide_k[at + 3u];
    let s1 = x.d4 * wide_k[at + 4u] + x.d5 * wide_k[at + 5u] + x.d6 * wide_k[at + 6u] + x.d7 * wide_k[at + 7u];
    let s2 = x.d8 * wide_k[at + 8u] + x.d9 * wide_k[at + 9u] + x.d10 * wide_k[at + 10u] + x.d11 * wide_k[at + 11u];
    let s3 = x.d12 * wide_k[at + 12u] + x.d13 * wide_k[at + 13u] + x.d14 * wide_k[at + 14u] + x.d15 * wide_k[at + 15u];
    let s = (s0 + s1) + (s2 + s3);
    return (s.x + s.y) + (s.z + s.w);
}

// acc * rescale + pk * wide_v[at .. at + 16].
fn wide_axpy(acc: Dims64, rescale: f32, pk: f32, at: u32) -> Dims64 {
    return Dims64(acc.d0 * rescale + pk * wide_v[at + 0u],
                  acc.d1 * rescale + pk * wide_v[at + 1u],
                  acc.d2 * rescale + pk * wide_v[at + 2u],
                  acc.d3 * rescale + pk * wide_v[at + 3u],
                  acc.d4 * rescale + pk * wide_v[at + 4u],
                  acc.d5 * rescale + pk * wide_v[at + 5u],
                  acc.d6 * rescale + pk * wide_v[at + 6u],
                  acc.d7 * rescale + pk * wide_v[at + 7u],
                  acc.d8 * rescale + pk * wide_v[at + 8u],
                  acc.d9 * rescale + pk * wide_v[at + 9u],
                  acc.d10 * rescale + pk * wide_v[at + 10u],
                  acc.d11 * rescale + pk * wide_v[at + 11u],
                  acc.d12 * rescale + pk * wide_v[at + 12u],
                  acc.d13 * rescale + pk * wide_v[at + 13u],
                  acc.d14 * rescale + pk * wide_v[at + 14u],
                  acc.d15 * rescale + pk * wide_v[at + 15u]);
}

fn wide_scale(acc: Dims64, rescale: f32) -> Dims64 {
    return Dims64(acc.d0 * rescale, acc.d1 * rescale, acc.d2 * rescale, acc.d3 * rescale, acc.d4 * rescale, acc.d5 * rescale, acc.d6 * rescale, acc.d7 * rescale, acc.d8 * rescale, acc.d9 * rescale, acc.d10 * rescale, acc.d11 * rescale, acc.d12 * rescale, acc.d13 * rescale, acc.d14 * rescale, acc.d15 * rescale);
}

// Row r's state handed over by the other thread of its pair: rows 0..31 in wide_k, 32..63 in wide_v.
fn wide_partner(r: u32, j: u32) -> vec4<f32> {
    let at = (r % 32u) * 16u + j;
    if (r < 32u) {
        return wide_k[at];
    }
    return wide_v[at];
}

fn wide_stash4(r: u32, j: u32, x: vec4<f32>) {
    let at = (r % 32u) * 16u + j;
    if (r < 32u) {
        wide_k[at] = x;
    } else {
        wide_v[at] = x;
    }
}

fn wide_stash(acc: Dims64, r: u32) {
    wide_stash4(r, 0u, acc.d0);
    wide_stash4(r, 1u, acc.d1);
    wide_stash4(r, 2u, acc.d2);
    wide_stash4(r, 3u, acc.d3);
    wide_stash4(r, 4u, acc.d4);
    wide_stash4(r, 5u, acc.d5);
    wide_stash4(r, 6u, acc.d6);
    wide_stash4(r, 7u, acc.d7);
    wide_stash4(r, 8u, acc.d8);
    wide_stash4(r, 9u, acc.d9);
    wide_stash4(r, 10u, acc.d10);
    wide_stash4(r, 11u, acc.d11);
    wide_stash4(r, 12u, acc.d12);
    wide_stash4(r, 13u, acc.d13);
    wide_stash4(r, 14u, acc.d14);
    wide_stash4(r, 15u, acc.d15);
}

// acc * a + b * (row r's handed-over accumulator).
fn wide_merge(acc: Dims64, a: f32, b: f32, r: u32) -> Dims64 {
    return Dims64(acc.d0 * a + b * wide_partner(r, 0u),
                  acc.d1 * a + b * wide_partner(r, 1u),
                  acc.d2 * a + b * wide_partner(r, 2u),
                  acc.d3 * a + b * wide_partner(r, 3u),
                  acc.d4 * a + b * wide_partner(r, 4u),
                  acc.d5 * a + b * wide_partner(r, 5u),
                  acc.d6 * a + b * wide_partner(r, 6u),
                  acc.d7 * a + b * wide_partner(r, 7u),
                  acc.d8 * a + b * wide_partner(r, 8u),
                  acc.d9 * a + b * wide_partner(r, 9u),
                  acc.d10 * a + b * wide_partner(r, 10u),
                  acc.d11 * a + b * wide_partner(r, 11u),
                  acc.d12 * a + b * wide_partner(r, 12u),
                  acc.d13 * a + b * wide_partner(r, 13u),
                  acc.d14 * a + b * wide_partner(r, 14u),
                  acc.d15 * a + b * wide_partner(r, 15u));
}

// Dims 4 (v0 + j) .. of `acc` to dst[base + ..], those below head_dim only.
fn wide_put4(to_out: bool, base: u32, v: u32, x: vec4<f32>) {
    if (4u * v >= p.head_dim) {
        return;
    }
    let e = base + 4u * v;
    if (to_out) {
        out[e] = x.x;
        out[e + 1u] = x.y;
        out[e + 2u] = x.z;
        out[e + 3u] = x.w;
    } else {
        partials[e] = x.x;
        partials[e + 1u] = x.y;
        partials[e + 2u] = x.z;
        partials[e + 3u] = x.w;
    }
}

fn wide_put(to_out: bool, base: u32, v0: u32, x: Dims64) {
    wide_put4(to_out, base, v0 + 0u, x.d0);
    wide_put4(to_out, base, v0 + 1u, x.d1);
    wide_put4(to_out, base, v0 + 2u, x.d2);
    wide_put4(to_out, base, v0 + 3u, x.d3);
    wide_put4(to_out, base, v0 + 4u, x.d4);
    wide_put4(to_out, base, v0 + 5u, x.d5);
    wide_put4(to_out, base, v0 + 6u, x.d6);
    wide_put4(to_out, base, v0 + 7u, x.d7);
    wide_put4(to_out, base, v0 + 8u, x.d8);
    wide_put4(to_out, base, v0 + 9u, x.d9);
    wide_put4(to_out, base, v0 + 10u, x.d10);
    wide_put4(to_out, base, v0 + 11u, x.d11);
    wide_put4(to_out, base, v0 + 12u, x.d12);
    wide_put4(to_out, base, v0 + 13u, x.d13);
    wide_put4(to_out, base, v0 + 14u, x.d14);
    wide_put4(to_out, base, v0 + 15u, x.d15);
}

@compute @workgroup_size(128)
fn prefill_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d_len = p.head_dim;
    let row_vecs = d_len / 4u;
    let group = p.n_heads / p.n_kv_heads;
    let pairs = p.n_tokens * group;
    let blocks_per_kv_head = (pairs + WIDE_ROWS - 1u) / WIDE_ROWS;
    let kv_head = wid.x / blocks_per_kv_head;
    let block = blocks_per_kv_head - 1u - wid.x % blocks_per_kv_head;
    let first = block * WIDE_ROWS;
    let n_rows = min(WIDE_ROWS, pairs - first);
    let kv_dim = p.n_kv_heads * d_len;
    let kv_offset = kv_head * d_len;
    let ctx = p.pos_offset + p.n_tokens;
    let span = (ctx + p.kv_splits - 1u) / p.kv_splits;
    let split = wid.y;
    let key_begin = split * span;
    // The last row's causal limit bounds the walk; keys past it are never read.
    let last_token = (first + n_rows - 1u) / group;
    let key_end = min(min(key_begin + span, ctx), p.pos_offset + last_token + 1u);

    // This thread: row r (padding rows past n_rows see no key), member `sub` of the row's pair.
    let r = lid / 2u;
    let sub = lid % 2u;
    let live = r < n_rows;
    let pair = first + min(r, n_rows - 1u);
    let token = pair / group;
    let head = kv_head * group + pair % group;
    let limit = select(0u, min(p.pos_offset + token + 1u, key_end), live);
    let by_dims = d_len > 64u;
    let v0 = select(0u, 16u * sub, by_dims);           // first vec4 of this thread's dims
    let key_first = select(sub, 0u, by_dims);          // keys key_first, + key_step, .. of a tile
    let key_step = select(2u, 1u, by_dims);

    let q_row = wide_load_q((token * p.n_heads + head) * d_len, v0);
    var acc = Dims64(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var m = NO_MAX;
    var l = 0.0;
    for (var tile = key_begin; tile < key_end; tile += WIDE_KEYS) {
        let n_keys = min(WIDE_KEYS, key_end - tile);
        // 1. Stage the tile's K and V rows, zeros past n_keys and past head_dim.
        for (var e = lid; e < WIDE_KEYS * WIDE_ROW_VECS; e += WIDE_THREADS) {
            let key = e / WIDE_ROW_VECS;
            let c = e % WIDE_ROW_VECS;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (key < n_keys && c < row_vecs) {
                let g = (tile + key) * kv_dim + kv_offset + 4u * c;
                kv = vec4<f32>(k_cache[g], k_cache[g + 1u], k_cache[g + 2u], k_cache[g + 3u]);
                vv = vec4<f32>(v_cache[g], v_cache[g + 1u], v_cache[g + 2u], v_cache[g + 3u]);
            }
            wide_k[e] = kv;
            wide_v[e] = vv;
        }
        workgroupBarrier();
        // 2. Scores (half scores when split by dims) of this thread's keys.
        for (var key = key_first; key < WIDE_KEYS; key += key_step) {
            wide_x[key * WIDE_THREADS + lid] = wide_dot(q_row, key * WIDE_ROW_VECS + v0);
        }
        workgroupBarrier();
        // 3. Online softmax over this thread's keys, then P V on its dims.
        var m_new = m;
        for (var key = key_first; key < WIDE_KEYS; key += key_step) {
            let i = key * WIDE_THREADS;
            let score = select(wide_x[i + lid], wide_x[i + (lid & ~1u)] + wide_x[i + (lid | 1u)], by_dims);
            m_new = max(m_new, select(NO_MAX, score, tile + key < limit));
        }
        var rescale = exp(m - m_new);
        m = m_new;
        l *= rescale;
        for (var key = key_first; key < WIDE_KEYS; key += key_step) {
            if (tile + key < limit) {
                let i = key * WIDE_THREADS;
                let score = select(wide_x[i + lid], wide_x[i + (lid & ~1u)] + wide_x[i + (lid | 1u)], by_dims);
                let pk = exp(score - m_new);
                l += pk;
                acc = wide_axpy(acc, rescale, pk, key * WIDE_ROW_VECS + v0);
                rescale = 1.0;
            }
        }
        acc = wide_scale(acc, rescale);
        // The next tile overwrites wide_k / wide_v / wide_x.
        workgroupBarrier();
    }

    // 4. Split by keys: thread 1 of the pair hands (m, l, acc) to thread 0, which merges them.
    if (!by_dims) {
        if (sub == 1u) {
            wide_stash(acc, r);
            wide_x[2u * r] = m;
            wide_x[2u * r + 1u] = l;
        }
        workgroupBarrier();
        if (sub == 1u) {
            return;
        }
        let m1 = wide_x[2u * r];
        let m_all = max(m, m1);
        let a = exp(m - m_all);
        let b = exp(m1 - m_all);
        acc = wide_merge(acc, a, b, r);
        l = l * a + wide_x[2u * r + 1u] * b;
        m = m_all;
    }
    // 5. out (one split: every row saw key 0, so l > 0) or (m, l, acc) partials.
    if (!live) {
        return;
    }
    let row = token * p.n_heads + head;
    if (p.kv_splits == 1u) {
        wide_put(true, row * d_len, v0, wide_scale(acc, 1.0 / l));
    } else {
        let base = (row * p.kv_splits + split) * (d_len + 2u);
        if (sub == 0u) {
            partials[base] = m;
            partials[base + 1u] = l;
        }
        wide_put(false, base + 2u, v0, acc);
    }
}
