// Workgroup sum of one f32 per thread (256 threads), the result visible to every thread.
// Must be called from workgroup-uniform control flow.

var<workgroup> row_sum_scratch: array<f32, 256>;

fn workgroup_sum(value: f32, lid: u32) -> f32 {
    row_sum_scratch[lid] = value;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            row_sum_scratch[lid] += row_sum_scratch[lid + stride];
        }
        workgroupBarrier();
    }
    let total = row_sum_scratch[0];
    // Keep the next call from overwriting slot 0 before everyone has read it.
    workgroupBarrier();
    return total;
}
