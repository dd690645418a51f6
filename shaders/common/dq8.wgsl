// Eight consecutive dequantized weights (elements 8g .. 8g+7 of a row), the unit every weight
// format's `dequant8` returns so that embed / matvec / matmul bodies are format-independent.
struct Dq8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Byte `i` (0..3) of a little-endian word, as u32.
fn byte_of(word: u32, i: u32) -> u32 {
    return (word >> (8u * i)) & 0xffu;
}

// The four bytes of a word as a vector (lowest byte first).
fn bytes4(word: u32) -> vec4<u32> {
    return (vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
}

// Words taken by a packed segment of `bytes` bytes: segments are padded to 16 bytes
// (engine::quant::SEGMENT_ALIGN), so every segment starts on a vec4<u32> boundary.
fn segment_words(bytes: u32) -> u32 {
    return ((bytes + 15u) / 16u) * 4u;
}

// Half `h` (0 or 1) of an f16 pair packed in a word, widened to f32 (no shader-f16 needed).
fn f16_at(word: u32, h: u32) -> f32 {
    let pair = unpack2x16float(word);
    return select(pair.x, pair.y, h == 1u);
}
