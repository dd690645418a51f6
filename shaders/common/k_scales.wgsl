// The 6-bit (scale, min) of sub-block j (0..7) of a Q4_K / Q5_K block from its 12 packed scale
// bytes (3 words): bytes 0..3 hold scales 0..3 (low 6 bits) and the top 2 bits of scales 4..7,
// bytes 4..7 the same for mins, bytes 8..11 the low nibbles of scales 4..7 (low) and mins 4..7 (high).
fn k_scale_min(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_of(s0, j) & 63u, byte_of(s1, j) & 63u);
    }
    let low = byte_of(s2, j - 4u);
    let scale = (low & 0xfu) | ((byte_of(s0, j - 4u) >> 6u) << 4u);
    let min = (low >> 4u) | ((byte_of(s1, j - 4u) >> 6u) << 4u);
    return vec2<u32>(scale, min);
}
