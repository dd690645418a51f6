// The uniform block of every matvec_<format>.wgsl / matmul_<format>.wgsl (engine::kernels::MatMulParams).
struct MatMulParams {
    m: u32,          // activation rows
    n: u32,          // weight rows (output features of this weight part)
    k: u32,          // weight cols (input features)
    x_row: u32,      // first activation row read
    has_bias: u32,
    out_stride: u32, // elements between output rows (>= out_col + n)
    out_col: u32,    // first output column written (weights split by rows write side by side)
}
