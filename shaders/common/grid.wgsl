// Shared helpers for dispatch geometry. A dispatch may exceed the 65535-workgroup limit of one
// dimension, so the host folds long 1-D grids into (x, y) with x <= 65535 (engine::shaders::grid);
// kernels unfold them here.

// Linear index of this workgroup in a 2-D folded grid.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
