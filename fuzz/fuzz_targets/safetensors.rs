//! safetensors parsing, then reading (and dequantizing) every listed tensor.
#![no_main]

use engine::quant;
use engine::safetensors_source::SafetensorsFile;
use engine::weights::WeightSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SafetensorsFile::from_bytes(data.to_vec()) else { return };
    for meta in file.tensors() {
        let Ok(bytes) = file.tensor_bytes(&meta.name) else { continue };
        if meta.n_elements() > 1 << 20 {
            continue;
        }
        let mut out = vec![0f32; meta.n_elements()];
        let _ = quant::dequantize(meta.ty, &bytes, &mut out);
    }
    let _ = file.tensor_bytes("not.a.tensor");
});
