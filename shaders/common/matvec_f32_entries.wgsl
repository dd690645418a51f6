// The f32 pair matvec's entry points inside a planes kernel file (matvec_planes_<format>.wgsl),
// for matrices too small to repay its `quantize` dispatch: `f32_main` / `f32_lanes64` /
// `f32_lanes128` are `main` / `lanes64` / `lanes128` of the format's f32 kernel (32, 64 or 128
// threads per pair of rows). Each calls the including file's `matvec_pairs_f32(wid, nwg, tid, lanes)`.

@compute @workgroup_size(128)
fn f32_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 32u);
}

@compute @workgroup_size(128)
fn f32_lanes64(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 64u);
}

@compute @workgroup_size(128)
fn f32_lanes128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    matvec_pairs_f32(wid, nwg, tid, 128u);
}
