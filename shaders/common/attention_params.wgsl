// The uniform block of the attention kernels (engine::kernels::AttentionParams).
struct AttentionParams {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos_offset: u32,
    scale: f32,
    kv_splits: u32,
}
