// Workgroup sum of one f32 per thread (256 threads), the result visible to every thread.
// Must be called from workgroup-uniform control flow.

var<workgroup> row_sum_scratch: array<f32, 256>;

fn workgroup_sum(value: f32, lid: u32) -> f32 {
    // Two levels of eight-way sums instead of a binary tree: 4 barriers instead of 10. Thread t
    // only reads slots congruent to t (mod 32, then mod 4) and writes slot t, so nothing races.
    row_sum_scratch[lid] = value;
    workgroupBarrier();
    if (lid < 32u) {
        var s = 0.0;
        for (var j = 0u; j < 8u; j++) {
            s += row_sum_scratch[lid + 32u * j];
        }
        row_sum_scratch[lid] = s;
    }
    workgroupBarrier();
    if (lid < 4u) {
        var s = 0.0;
        for (var j = 0u; j < 8u; j++) {
            s += row_sum_scratch[lid + 4u * j];
        }
        row_sum_scratch[lid] = s;
    }
    workgroupBarrier();
    let total = (row_sum_scratch[0] + row_sum_scratch[1]) + (row_sum_scratch[2] + row_sum_scratch[3]);
    // Keep the next call from overwriting the slots before everyone has read them.
    workgroupBarrier();
    return total;
}
