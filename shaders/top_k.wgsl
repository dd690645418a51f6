// top_k: TopK -- the k <= 64 largest of x[offset .. offset + n] with their indices, largest first
// (lower index first on ties), so sampling with a top-k filter reads back 512 bytes instead of
// the vocabulary row (engine::sampling::Sampler::sample_from_top finishes the draw on the host,
// bit for bit as from the whole row). Values are ordered by an order-preserving u32 key of their
// bits (no float compares, so NaN and infinities need no care): NaN lowest, then -inf ... +inf,
// -0 below +0 (engine::kernels::reference::top_k_key). Places past n read (NONE, a NaN).
//
// Bindings (group 0):
//   0 uniform TopKParams { n, offset, k }
//   1 x: array<f32>                      [offset + n]
//   2 out: array<u32> (read_write)       [2 k]: index, then value bits, per place
//   3 scratch: array<u32> (read_write)   device-owned (engine::shaders::scratch_bytes): two
//       regions of lists of LIST (index, key) pairs, A from word 0, B after A
// Dispatch (engine::shaders::plan), workgroups of 256 threads, each sorting 1024 (value, index)
//   pairs in workgroup memory (bitonic network) and keeping the first LIST:
//   `partial`: ceil(n / 1024) workgroups (folded into (x <= 65535, y)), x chunk g -> list g of A;
//   `merge`: ceil(lists_a / 16) workgroups, 16 lists of A each -> list g of B;
//   `finish`: one workgroup, the (<= 16) lists of B -> out. So n <= 1024 * 16 * 16 = 262,144.

#include "common/grid.wgsl"

struct TopKParams {
    n: u32,
    offset: u32,
    k: u32,
}

@group(0) @binding(0) var<uniform> p: TopKParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<u32>;

const NONE: u32 = 0xffffffffu;
const SORTED: u32 = 1024u;         // pairs sorted per workgroup (engine::shaders::TOP_K_CHUNK)
const LIST: u32 = 64u;             // pairs kept per list (engine::kernels::TOP_K_MAX)
const LISTS_PER_SORT: u32 = 16u;   // SORTED / LIST

var<workgroup> keys: array<u32, SORTED>;
var<workgroup> indices: array<u32, SORTED>;

// The sort key of a value: its bits with the sign bit set for positives and all bits flipped
// for negatives, so u32 order is float order; NaNs get 0.
fn key_of(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// The value bits of a key (a NaN for 0).
fn bits_of(key: u32) -> u32 {
    return select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u);
}

// Whether place a comes before place b: larger key, then lower index.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// Sorts `keys` / `indices` (every slot filled) into descending order. Uniform control flow.
fn sort_workgroup(lid: u32) {
    for (var size = 2u; size <= SORTED; size *= 2u) {
        for (var stride = size / 2u; stride > 0u; stride /= 2u) {
            workgroupBarrier();
            // 512 compare-exchanges per step, two per thread.
            for (var t = lid; t < SORTED / 2u; t += 256u) {
                let a = 2u * stride * (t / stride) + t % stride;
                let b = a + stride;
                // Descending runs where (a & size) == 0, so the last merge sorts descending.
                let descending = (a & size) == 0u;
                let swap = before(keys[b], indices[b], keys[a], indices[a]) == descending;
                if (swap) {
                    let k = keys[a];
                    let i = indices[a];
                    keys[a] = keys[b];
                    indices[a] = indices[b];
                    keys[b] = k;
                    indices[b] = i;
                }
            }
        }
    }
    workgroupBarrier();
}

// Words of region B: after A's lists.
fn region_b() -> u32 {
    return 2u * LIST * ((p.n + SORTED - 1u) / SORTED);
}

// Loads pair `slot` of a sort from list pairs at `base` (`pairs` of them valid).
fn load_pair(slot: u32, base: u32, pairs: u32) {
    if (slot < pairs) {
        indices[slot] = scratch[base + 2u * slot];
        keys[slot] = scratch[base + 2u * slot + 1u];
    } else {
        indices[slot] = NONE;
        keys[slot] = 0u;
    }
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_workgroup(wid, nwg);
    if (g * SORTED >= p.n) {
        return;
    }
    for (var slot = lid; slot < SORTED; slot += 256u) {
        let i = g * SORTED + slot;
        if (i < p.n) {
            keys[slot] = key_of(x[p.offset + i]);
            indices[slot] = i;
        } else {
            keys[slot] = 0u;
            indices[slot] = NONE;
        }
    }
    sort_workgroup(lid);
    if (lid < LIST) {
        scratch[2u * (g * LIST + lid)] = indices[lid];
        scratch[2u * (g * LIST + lid) + 1u] = keys[lid];
    }
}

@compute @workgroup_size(256)
fn merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let lists_a = (p.n + SORTED - 1u) / SORTED;
    let first = wid.x * LISTS_PER_SORT;
    let pairs = min(lists_a - first, LISTS_PER_SORT) * LIST;
    for (var slot = lid; slot < SORTED; slot += 256u) {
        load_pair(slot, 2u * first * LIST, pairs);
    }
    sort_workgroup(lid);
    if (lid < LIST) {
        let at = region_b() + 2u * (wid.x * LIST + lid);
        scratch[at] = indices[lid];
        scratch[at + 1u] = keys[lid];
    }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) lid: u32) {
    let lists_b = ((p.n + SORTED - 1u) / SORTED + LISTS_PER_SORT - 1u) / LISTS_PER_SORT;
    for (var slot = lid; slot < SORTED; slot += 256u) {
        load_pair(slot, region_b(), lists_b * LIST);
    }
    sort_workgroup(lid);
    if (lid < p.k) {
        out[2u * lid] = indices[lid];
        out[2u * lid + 1u] = bits_of(keys[lid]);
    }
}
