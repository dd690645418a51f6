// rope_attention_decode: RopeAttention -- RoPE, the KV cache write and attention of one decode
// token in one op: what RopeKvWrite followed by AttentionDecode compute, without the q buffer in
// between and without RopeKvWrite's dispatch (one of ~11 a decode layer; each dependent dispatch
// costs its launch and a barrier on top of its work).
//
// From the token's fused q|k|v row: query head h is RMS-normalised with q_norm (when qk_norm),
// rotated at position pos_offset and scaled into `q_row`; the workgroups whose key split holds
// position pos_offset (the last one) also rotate kv head h / group's k the same way (k_norm) and
// write it and v to cache row pos_offset, then attend as attention_decode.wgsl (same entry
// points, work split and partials). The `group` query heads of a kv head write the same bits
// to that row; each reads it only after its own write (storageBarrier), so whichever write
// lands, every reader sees the same values.
//
// Bindings (group 0):
//   0 uniform RopeAttentionParams { n_tokens (= 1), n_heads, n_kv_heads, head_dim, pos_offset,
//       scale, kv_splits, qk_norm, eps, interleaved }
//   1 table: array<f32>                    [ctx, head_dim / 2, 2] (cos, sin)
//   2 qkv: array<f32>                      [(n_heads + 2 n_kv_heads) * head_dim]
//   3 q_norm: array<f32>                   [head_dim] (placeholder without qk_norm)
//   4 k_norm: array<f32>                   [head_dim] (placeholder without qk_norm)
//   5 k_cache: array<vec4<f32>> (read_write)   [ctx, n_kv_heads * head_dim], row pos_offset written
//   6 v_cache: array<vec4<f32>> (read_write)   [ctx, n_kv_heads * head_dim], row pos_offset written
//   7 out: array<f32> (read_write)         [n_heads, head_dim]
//   8 planes: array<vec4<u32>> (read_write) the device scratch: the planes of `out` as one row
//       (common/planes.wgsl, written by `wide_planes` / `combine_planes`), then from word
//       `partials_base()` the splits' partials [n_heads, kv_splits, head_dim + 2] as f32 bits
// Dispatch: as attention_decode.wgsl (head_dim a multiple of 4, <= 256): decode or wide
//   (n_heads, kv_splits, 1), then, when kv_splits > 1, combine. Where a planes matvec reads
//   `out` next (engine::shaders::pass_plans; head_dim 16..256, powers of two), `wide_planes`
//   (one split) or `wide` + `combine_planes` instead, which write its planes too, so that matvec
//   skips its `quantize` dispatch.

#include "common/grid.wgsl"
#include "common/planes.wgsl"
#include "common/rope_pair.wgsl"

struct RopeAttentionParams {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos_offset: u32,
    scale: f32,
    kv_splits: u32,
    qk_norm: u32,
    eps: f32,
    interleaved: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: RopeAttentionParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> q_norm: array<f32>;
@group(0) @binding(4) var<storage, read> k_norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> planes: array<vec4<u32>>;

#include "common/attention_decode_body.wgsl"

// The elements rotated together: (i, i + head_dim / 2) for NeoX, (2i, 2i + 1) for interleaved.
fn pair(i: u32) -> vec2<u32> {
    if (p.interleaved != 0u) {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + p.head_dim / 2u);
}

fn prepare_head(h: u32, split: u32, lid: u32, threads: u32) {
    let d = p.head_dim;
    let half_dim = d / 2u;
    let kv_head = h / (p.n_heads / p.n_kv_heads);
    // The query head, rotated and scaled, into q_row.
    let q_src = h * d;
    let q_inv = head_inv_rms(q_src, lid, threads);
    for (var i = lid; i < half_dim; i += threads) {
        let ab = pair(i);
        let r = rotated_pair(q_src, i, ab, p.pos_offset * d, q_inv, true);
        q_row[ab.x / 4u][ab.x % 4u] = r.x * p.scale;
        q_row[ab.y / 4u][ab.y % 4u] = r.y * p.scale;
    }
    // The new key and value, by the workgroups whose split reads them.
    let keys = split_keys(split);
    if (keys.x <= p.pos_offset && p.pos_offset < keys.y) {
        let k_src = (p.n_heads + kv_head) * d;
        let v_src = (p.n_heads + p.n_kv_heads + kv_head) * d;
        let row4 = (p.pos_offset * p.n_kv_heads + kv_head) * (d / 4u);
        let k_inv = head_inv_rms(k_src, lid, threads);
        for (var i = lid; i < half_dim; i += threads) {
            let ab = pair(i);
            let r = rotated_pair(k_src, i, ab, p.pos_offset * d, k_inv, false);
            k_cache[row4 + ab.x / 4u][ab.x % 4u] = r.x;
            k_cache[row4 + ab.y / 4u][ab.y % 4u] = r.y;
        }
        for (var e = lid; e < d / 4u; e += threads) {
            v_cache[row4 + e] = vec4<f32>(qkv[v_src + 4u * e], qkv[v_src + 4u * e + 1u], qkv[v_src + 4u * e + 2u], qkv[v_src + 4u * e + 3u]);
        }
        storageBarrier();
    }
    workgroupBarrier();
}

// The scratch: the planes of the output row (n_heads * head_dim values, common/planes.wgsl
// layout) first, then the splits' partial results as f32 bits.
fn partials_base() -> u32 {
    let groups = p.n_heads * p.head_dim / GROUP_ELEMENTS;
    return 4u * (3u * groups + (groups + 1u) / 2u);
}

fn partial_at(i: u32) -> f32 {
    let w = partials_base() + i;
    return bitcast<f32>(planes[w / 4u][w % 4u]);
}

fn set_partial(i: u32, v: f32) {
    let w = partials_base() + i;
    planes[w / 4u][w % 4u] = bitcast<u32>(v);
}

fn write_head_output(h: u32, lid: u32, o: vec4<f32>, live: bool, planes_out: bool) {
    if (live) {
        store_output_quarter(h, lid, o);
    }
    if (planes_out) {
        write_row_quarter(lid, live, p.n_heads * p.head_dim / GROUP_ELEMENTS, h * (p.head_dim / 4u) + lid, o);
    }
}

@compute @workgroup_size(64)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    decode_head(wid.x, wid.y, lid, false);
}

@compute @workgroup_size(256)
fn wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    wide_head(wid.x, wid.y, lid, false);
}

// `wide` with one split, also writing the output row's planes (for the planes matvec after it:
// engine::shaders::pass_plans); head_dim a multiple of 16.
@compute @workgroup_size(256)
fn wide_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    wide_head(wid.x, wid.y, lid, true);
}

#include "common/attention_combine.wgsl"

// `combine` with a thread per 4 output elements, also writing the output row's planes.
@compute @workgroup_size(64)
fn combine_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = linear_workgroup(wid, nwg);
    if (h >= p.n_heads) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = h * p.kv_splits * stride;
    let stats = split_stats(base, stride);
    let m = stats.x;
    let denom = stats.y;
    let live = lid < p.head_dim / 4u;
    var o = vec4<f32>(0.0);
    if (live) {
        var num = vec4<f32>(0.0);
        for (var s = 0u; s < p.kv_splits; s++) {
            let split_base = base + s * stride;
            if (partial_at(split_base + 1u) > 0.0) {
                let at = split_base + 2u + 4u * lid;
                let acc = vec4<f32>(partial_at(at), partial_at(at + 1u), partial_at(at + 2u), partial_at(at + 3u));
                num += exp(partial_at(split_base) - m) * acc;
            }
        }
        o = select(vec4<f32>(0.0), num / denom, vec4<bool>(denom > 0.0));
    }
    write_head_output(h, lid, o, live, true);
}
