//! GGUF header parsing and everything a loader does next with a file that parsed.
#![no_main]

use engine::gguf::{GgufFile, GgufHeader};
use engine::quant;
use engine::weights::WeightSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = GgufHeader::parse(data) {
        let _ = header.validate_against_len(data.len() as u64);
        for tensor in &header.tensors {
            let _ = header.tensor_range(tensor);
        }
        for (key, _) in &header.metadata {
            let _ = header.get_u32(key);
            let _ = header.get_u64(key);
            let _ = header.get_f32(key);
            let _ = header.get_bool(key);
            let _ = header.get_str(key);
            let _ = header.get_str_array(key);
            let _ = header.get_i32_array(key);
            let _ = header.get_f32_array(key);
        }
        let _ = header.architecture();
    }
    // As a prefix of a longer file, and with a length that cuts it short.
    let _ = GgufHeader::parse_prefix(data, (data.len() as u64).saturating_mul(3));
    let _ = GgufHeader::parse_prefix(data, (data.len() / 2) as u64);

    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else { return };
    for meta in file.tensors() {
        let Ok(bytes) = file.tensor_bytes(&meta.name) else { continue };
        if !meta.ty.is_supported() || meta.n_elements() > 1 << 20 {
            continue;
        }
        let mut out = vec![0f32; meta.n_elements()];
        let _ = quant::dequantize(meta.ty, &bytes, &mut out);
        if let Ok(packed) = quant::repack(meta.ty, &bytes) {
            let n_blocks = bytes.len() / meta.ty.block_bytes();
            let _ = quant::dequantize_packed(meta.ty, &packed, n_blocks, 0, &mut out);
        }
    }
});
