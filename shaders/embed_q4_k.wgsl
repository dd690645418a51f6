// embed_q4_k: Embed(Q4_K) -- gathers token rows of a Q4_K embedding table into f32 rows.
//
// Bindings (group 0):
//   0 uniform EmbedParams { n_tokens, hidden, first_row, n_rows }
//   1 weights: array<u32>            packed table part [n_rows, hidden] (SoA segments dm | scales | qs; k a multiple of 256)
//   2 ids: array<u32>                [n_tokens]
//   3 out: array<f32> (read_write)   [n_tokens, hidden]; rows whose id is outside
//                                    first_row .. first_row + n_rows are not written
// Dispatch: workgroup_size 64, one thread per 8 columns;
//   (ceil(ceil(hidden / 8) / 64), n_tokens, 1) workgroups.
// Dequantization follows engine/src/quant.rs (itself bit-exact with gguf-py 0.19).

#include "common/dequant_q4_k.wgsl"
#include "common/embed_body.wgsl"
