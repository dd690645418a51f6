// attention_decode: AttentionDecode -- causal GQA attention of one query token over the KV cache
// (decode), split-K with an online softmax: out[h] = softmax(scale * q[h] . K[0 ..= pos_offset]) V,
// query head h reading kv head h / (n_heads / n_kv_heads). head_dim a multiple of 4, <= 256
// (other shapes take shaders/attention.wgsl).
//
// Entry points (one bind group):
//   `decode`: a workgroup per (query head, key split). Per tile of up to 64 keys, thread i scores
//     key i (16-byte loads of its K row, four in flight), the tile's max and sum come from the 64
//     scores in workgroup memory, then P.V: thread i owns 4 output elements (column i % (head_dim
//     / 4)) for every (64 / (head_dim / 4))-th key of the tile, the key subsets summed at the end.
//     With one split the workgroup writes `out` itself; with several it writes (m, l, acc) to
//     `partials` and `combine` merges them.
//   `wide` (head_dim 16, 32, ..., 256): the same per (query head, key split) with 256 threads, so
//     each thread has at most four loads per phase and a tile costs two memory round trips:
//     head_dim / 16 threads per key share its score (4 vec4 of the K row each, partial dots summed
//     in workgroup memory), 1024 / head_dim keys per tile; P.V as `decode` with 256 / (head_dim /
//     4) key subsets. H100, Llama-3-8B decode (head_dim 128): see docs/PERF.md pass 8.
//   `combine`: a workgroup per query head (common/attention_combine.wgsl).
//
// Bindings (group 0):
//   0 uniform AttentionParams { n_tokens (= 1), n_heads, n_kv_heads, head_dim, pos_offset, scale, kv_splits }
//   1 q: array<vec4<f32>>                  [n_heads, head_dim]
//   2 k_cache: array<vec4<f32>>            [ctx, n_kv_heads * head_dim], ctx >= pos_offset + 1
//   3 v_cache: array<vec4<f32>>            [ctx, n_kv_heads * head_dim]
//   4 out: array<f32> (read_write)         [n_heads, head_dim]
//   5 partials: array<f32> (read_write)    device scratch [n_heads, kv_splits, head_dim + 2]
// Dispatch (workgroup_size 64; `wide` 256): decode or wide (n_heads, kv_splits, 1), then, when
//   kv_splits > 1, combine (n_heads folded into x <= 65535, y).

#include "common/grid.wgsl"
#include "common/attention_params.wgsl"

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

#include "common/attention_decode_body.wgsl"

// The query row of head h, pre-scaled.
fn prepare_head(h: u32, split: u32, lid: u32, threads: u32) {
    let dim4 = p.head_dim / 4u;
    if (lid < dim4) {
        q_row[lid] = q[h * dim4 + lid] * p.scale;
    }
    workgroupBarrier();
}

fn partial_at(i: u32) -> f32 {
    return partials[i];
}

fn set_partial(i: u32, v: f32) {
    partials[i] = v;
}

fn write_head_output(h: u32, lid: u32, o: vec4<f32>, live: bool, planes_out: bool) {
    if (live) {
        store_output_quarter(h, lid, o);
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

#include "common/attention_combine.wgsl"
