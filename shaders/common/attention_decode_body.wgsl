// The decode attention of one query head over one key split (attention_decode.wgsl's `decode`
// and `wide`; see there for the work split), shared with rope_attention_decode.wgsl. The
// including file declares the uniform `p` (AttentionParams' fields), k_cache / v_cache
// (array<vec4<f32>>) and out (array<f32>), and defines `prepare_head(h, split, lid, threads)`
// (fills `q_row` with the query row times p.scale, does whatever else must come first and ends
// with a workgroup barrier), `partial_at(i)` / `set_partial(i, v)` (the partial results of the
// splits, f32) and `write_head_output(h, lid, o, live, planes_out)` (quarter `lid` of head h's
// output when `live`; called by every thread of the workgroup).

const WORKGROUP: u32 = 64u;
const TILE: u32 = 64u;        // keys per step: one per thread
const MAX_DIM4: u32 = 64u;    // head_dim / 4 <= 64
// Stands in for -inf: masked keys never win the max, and exp(m_old - m_new) stays finite.
const NO_MAX: f32 = -3.0e38;

var<workgroup> q_row: array<vec4<f32>, MAX_DIM4>;      // the query row, pre-scaled
var<workgroup> tile_vals: array<vec4<f32>, 64>;        // a tile's <= 256 scores, then probabilities
var<workgroup> column_sums: array<vec4<f32>, 256>;     // [key subset][column], one per thread

fn horizontal_sum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Thread `i` of the tile stores its value; after a barrier every thread reads all 64.
// Max / sum of the first 4 count4 entries of tile_vals.
fn tile_max(count4: u32) -> f32 {
    var m4 = tile_vals[0];
    for (var j = 1u; j < count4; j++) {
        m4 = max(m4, tile_vals[j]);
    }
    return max(max(m4.x, m4.y), max(m4.z, m4.w));
}

fn tile_sum(count4: u32) -> f32 {
    var s4 = vec4<f32>(0.0);
    for (var j = 0u; j < count4; j++) {
        s4 += tile_vals[j];
    }
    return horizontal_sum(s4);
}

fn prob(key: u32) -> f32 {
    return tile_vals[key / 4u][key % 4u];
}

// acc + the probability-weighted V rows of a tile's keys subset, subset + subsets, ... <
// n_keys for one 4-element column (`v_col`: that column in the first of them; `step`: subsets
// rows).
fn add_values(acc_in: vec4<f32>, subset: u32, subsets: u32, n_keys: u32, v_col: u32, step: u32) -> vec4<f32> {
    var acc = acc_in;
    var key = subset;
    var v_at = v_col;
    // Four keys per step, so four loads are in flight.
    for (; key + 3u * subsets < n_keys; key += 4u * subsets) {
        let v0 = v_cache[v_at];
        let v1 = v_cache[v_at + step];
        let v2 = v_cache[v_at + 2u * step];
        let v3 = v_cache[v_at + 3u * step];
        acc += (prob(key) * v0 + prob(key + subsets) * v1) + (prob(key + 2u * subsets) * v2 + prob(key + 3u * subsets) * v3);
        v_at += 4u * step;
    }
    for (; key < n_keys; key += subsets) {
        acc += prob(key) * v_cache[v_at];
        v_at += step;
    }
    return acc;
}

// Sums the key subsets' `acc` per column and writes the head's output (one split) or its
// partial (m, l, acc) for `combine`. Uniform control flow (a barrier).
// Keys [begin, end) of split `split` of the context 0..=pos_offset (empty past the context).
fn split_keys(split: u32) -> vec2<u32> {
    let ctx = p.pos_offset + 1u;
    let span = (ctx + p.kv_splits - 1u) / p.kv_splits;
    let begin = split * span;
    return vec2<u32>(begin, min(begin + span, ctx));
}

// Quarter `lid` (elements 4 lid ..) of head h's output row.
fn store_output_quarter(h: u32, lid: u32, o: vec4<f32>) {
    let at = h * p.head_dim + 4u * lid;
    out[at] = o.x;
    out[at + 1u] = o.y;
    out[at + 2u] = o.z;
    out[at + 3u] = o.w;
}

fn finish_head(h: u32, split: u32, lid: u32, dim4: u32, subsets: u32, acc: vec4<f32>, m: f32, l: f32, planes_out: bool) {
    column_sums[lid] = acc;
    workgroupBarrier();
    let live = lid < dim4;
    var total = vec4<f32>(0.0);
    if (live) {
        for (var j = 0u; j < subsets; j++) {
            total += column_sums[j * dim4 + lid];
        }
    }
    if (p.kv_splits == 1u) {
        // One split holds every key (ctx >= 1), so l > 0.
        write_head_output(h, lid, total / l, live, planes_out);
    } else if (live) {
        let base = (h * p.kv_splits + split) * (p.head_dim + 2u);
        if (lid == 0u) {
            set_partial(base, m);
            set_partial(base + 1u, l);
        }
        let at = base + 2u + 4u * lid;
        set_partial(at, total.x);
        set_partial(at + 1u, total.y);
        set_partial(at + 2u, total.z);
        set_partial(at + 3u, total.w);
    }
}

// `decode` of query head h, key split `split`.
fn decode_head(h: u32, split: u32, lid: u32, planes_out: bool) {
    let dim4 = p.head_dim / 4u;
    let group = p.n_heads / p.n_kv_heads;
    let kv_dim4 = p.n_kv_heads * dim4;
    let kv_offset4 = (h / group) * dim4;
    let keys = split_keys(split);
    let key_begin = keys.x;
    let key_end = keys.y;
    prepare_head(h, split, lid, WORKGROUP);
    // P.V work split: `column` of the output, every `subsets`-th key from `subset`.
    let column = lid % dim4;
    let subsets = WORKGROUP / dim4;
    let subset = lid / dim4;
    var m = NO_MAX;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var tile = key_begin; tile < key_end; tile += TILE) {
        let n_keys = min(TILE, key_end - tile);
        var score = NO_MAX;
        if (lid < n_keys) {
            let k_row = (tile + lid) * kv_dim4 + kv_offset4;
            var dot4 = vec4<f32>(0.0);
            var i = 0u;
            for (; i + 4u <= dim4; i += 4u) {
                let k0 = k_cache[k_row + i];
                let k1 = k_cache[k_row + i + 1u];
                let k2 = k_cache[k_row + i + 2u];
                let k3 = k_cache[k_row + i + 3u];
                dot4 += (q_row[i] * k0 + q_row[i + 1u] * k1) + (q_row[i + 2u] * k2 + q_row[i + 3u] * k3);
            }
            for (; i < dim4; i++) {
                dot4 += q_row[i] * k_cache[k_row + i];
            }
            score = horizontal_sum(dot4);
        }
        tile_vals[lid / 4u][lid % 4u] = score;
        workgroupBarrier();
        let m_tile = max(m, tile_max(TILE / 4u));
        workgroupBarrier();
        tile_vals[lid / 4u][lid % 4u] = select(0.0, exp(score - m_tile), lid < n_keys);
        workgroupBarrier();
        let rescale = exp(m - m_tile);
        l = l * rescale + tile_sum(TILE / 4u);
        m = m_tile;
        acc *= rescale;
        if (subset < subsets) {
            acc = add_values(acc, subset, subsets, n_keys, (tile + subset) * kv_dim4 + kv_offset4 + column, subsets * kv_dim4);
        }
        // The next tile overwrites tile_vals.
        workgroupBarrier();
    }
    finish_head(h, split, lid, dim4, subsets, acc, m, l, planes_out);
}

const WIDE: u32 = 256u;

var<workgroup> dot_parts: array<f32, WIDE>;             // partial dots of the tile's keys

// `wide` of query head h, key split `split`.
fn wide_head(h: u32, split: u32, lid: u32, planes_out: bool) {
    let dim4 = p.head_dim / 4u;
    let per_key = dim4 / 4u;          // threads per key, four vec4 of its K row each
    let tile_keys = WIDE / per_key;   // 16 (head_dim 256) .. 256 (head_dim 16)
    let group = p.n_heads / p.n_kv_heads;
    let kv_dim4 = p.n_kv_heads * dim4;
    let kv_offset4 = (h / group) * dim4;
    let keys = split_keys(split);
    let key_begin = keys.x;
    let key_end = keys.y;
    prepare_head(h, split, lid, WIDE);
    // Score work split: key `lid / per_key` of the tile, vec4s 4 (lid % per_key) .. + 3 of its row.
    let score_key = lid / per_key;
    let part4 = 4u * (lid % per_key);
    let q0 = q_row[part4];
    let q1 = q_row[part4 + 1u];
    let q2 = q_row[part4 + 2u];
    let q3 = q_row[part4 + 3u];
    // P.V work split: `column` of the output, every `subsets`-th key from `subset`.
    let column = lid % dim4;
    let subsets = WIDE / dim4;
    let subset = lid / dim4;
    var m = NO_MAX;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var tile = key_begin; tile < key_end; tile += tile_keys) {
        let n_keys = min(tile_keys, key_end - tile);
        var part = 0.0;
        if (score_key < n_keys) {
            let at = (tile + score_key) * kv_dim4 + kv_offset4 + part4;
            let k0 = k_cache[at];
            let k1 = k_cache[at + 1u];
            let k2 = k_cache[at + 2u];
            let k3 = k_cache[at + 3u];
            part = horizontal_sum((q0 * k0 + q1 * k1) + (q2 * k2 + q3 * k3));
        }
        dot_parts[lid] = part;
        workgroupBarrier();
        if (lid < tile_keys) {
            var score = NO_MAX;
            if (lid < n_keys) {
                score = 0.0;
                for (var j = 0u; j < per_key; j++) {
                    score += dot_parts[lid * per_key + j];
                }
            }
            tile_vals[lid / 4u][lid % 4u] = score;
        }
        workgroupBarrier();
        let m_tile = max(m, tile_max(tile_keys / 4u));
        workgroupBarrier();
        if (lid < tile_keys) {
            tile_vals[lid / 4u][lid % 4u] = select(0.0, exp(tile_vals[lid / 4u][lid % 4u] - m_tile), lid < n_keys);
        }
        workgroupBarrier();
        let rescale = exp(m - m_tile);
        l = l * rescale + tile_sum(tile_keys / 4u);
        m = m_tile;
        acc *= rescale;
        acc = add_values(acc, subset, subsets, n_keys, (tile + subset) * kv_dim4 + kv_offset4 + column, subsets * kv_dim4);
        // The next tile overwrites dot_parts and tile_vals.
        workgroupBarrier();
    }
    finish_head(h, split, lid, dim4, subsets, acc, m, l, planes_out);
}
