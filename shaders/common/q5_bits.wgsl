// The 5-bit values of elements 8g .. 8g+7 of a Q5_0 / Q5_1 block: the nibble from `qs` (low nibbles
// for elements 0..15, high for 16..31) plus bit i of the little-endian word `qh` as bit 4.
fn q5_values(qs0: u32, qs1: u32, qh: u32, g: u32) -> array<vec4<u32>, 2> {
    let shift = (g / 2u) * 4u;
    let low0 = (bytes4(qs0) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let low1 = (bytes4(qs1) >> vec4<u32>(shift)) & vec4<u32>(0xfu);
    let base = g * 8u;
    let high0 = ((vec4<u32>(qh) >> (vec4<u32>(base) + vec4<u32>(0u, 1u, 2u, 3u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    let high1 = ((vec4<u32>(qh) >> (vec4<u32>(base) + vec4<u32>(4u, 5u, 6u, 7u))) & vec4<u32>(1u)) << vec4<u32>(4u);
    return array<vec4<u32>, 2>(low0 | high0, low1 | high1);
}
