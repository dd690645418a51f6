//! The real GGUF models (fetched by `scripts/fetch-models.sh`, not committed): headers match the
//! reference dumps, and every tensor dequantizes exactly as gguf-py 0.19 does (sampled rows
//! value by value, every tensor by checksum; see `tests/fixtures/quant/gen_fixtures.py`).
//!
//! A missing model fails the test: a skipped parity check would hide a regression.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engine::gguf::{GgufFile, MetaValue};
use engine::quant::{self, GgmlType};
use engine::weights::WeightSource;
use safetensors::SafeTensors;
use serde_json::Value;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const QWEN05: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn open_real_model(file: &str) -> GgufFile {
    let dir = std::env::var_os("QWGLM_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qwglm/models")
    });
    let path = dir.join(file);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/fetch-models.sh` (or point QWGLM_MODELS at the model cache) first",
        path.display()
    );
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn type_name_of_json_array(value: &MetaValue) -> &'static str {
    match value {
        MetaValue::U8(_) => "UINT8",
        MetaValue::I8(_) => "INT8",
        MetaValue::U16(_) => "UINT16",
        MetaValue::I16(_) => "INT16",
        MetaValue::U32(_) => "UINT32",
        MetaValue::I32(_) => "INT32",
        MetaValue::U64(_) => "UINT64",
        MetaValue::I64(_) => "INT64",
        MetaValue::F32(_) => "FLOAT32",
        MetaValue::F64(_) => "FLOAT64",
        MetaValue::Bool(_) => "BOOL",
        MetaValue::String(_) => "STRING",
        MetaValue::Array(_) => "ARRAY",
    }
}

/// A scalar metadata value against gguf-py's JSON rendering of it.
fn scalar_matches(value: &MetaValue, json: &Value) -> bool {
    match value {
        MetaValue::String(s) => json.as_str() == Some(s),
        MetaValue::Bool(b) => json.as_bool() == Some(*b),
        MetaValue::F32(x) => json.as_f64() == Some(f64::from(*x)),
        MetaValue::F64(x) => json.as_f64() == Some(*x),
        MetaValue::Array(_) => false,
        int => match (int.as_i64(), json.as_i64(), int.as_u64(), json.as_u64()) {
            (Some(a), Some(b), _, _) => a == b,
            (_, _, Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

fn check_header_against_reference(file: &GgufFile, reference: &Value) {
    let header = file.header();
    let meta = &reference["metadata"];
    assert_eq!(file.bytes().len() as u64, reference["size"].as_u64().expect("size"));
    assert_eq!(u64::from(header.version), meta["GGUF.version"].as_u64().expect("version"));
    assert_eq!(header.tensors.len() as u64, meta["GGUF.tensor_count"].as_u64().expect("tensor count"));
    assert_eq!(header.metadata.len() as u64, meta["GGUF.kv_count"].as_u64().expect("kv count"));

    // Every key/value, arrays by element type, length and their first/last (or all) elements.
    let keys = meta.as_object().expect("metadata object").iter().filter(|(k, _)| !k.starts_with("GGUF."));
    let mut n_keys = 0;
    for (key, expected) in keys {
        n_keys += 1;
        let value = header.get(key).unwrap_or_else(|| panic!("missing key {key}"));
        match value {
            MetaValue::Array(items) => {
                assert_eq!(items.len() as u64, expected["len"].as_u64().expect("len"), "{key}");
                if let Some(first) = items.first() {
                    assert_eq!(type_name_of_json_array(first), expected["array_of"], "{key}");
                }
                let (head, tail) = match expected.get("values") {
                    Some(values) => (values, &Value::Array(vec![])),
                    None => (&expected["first"], &expected["last"]),
                };
                let head = head.as_array().expect("values");
                let tail = tail.as_array().expect("values");
                for (item, json) in items.iter().zip(head) {
                    assert!(scalar_matches(item, json), "{key}: {item:?} vs {json}");
                }
                for (item, json) in items[items.len() - tail.len()..].iter().zip(tail) {
                    assert!(scalar_matches(item, json), "{key}: {item:?} vs {json}");
                }
            }
            scalar => assert!(scalar_matches(scalar, expected), "{key}: {scalar:?} vs {expected}"),
        }
    }
    assert_eq!(n_keys, header.metadata.len());

    // Tensor infos: names, types, dims, sizes, absolute offsets, in file order.
    let tensors = reference["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), header.tensors.len());
    let mut histogram = BTreeMap::<String, u64>::new();
    for (info, expected) in header.tensors.iter().zip(tensors) {
        assert_eq!(info.name, expected["name"].as_str().expect("name"));
        assert_eq!(info.ty.name(), expected["ggml_type"].as_str().expect("type"), "{}", info.name);
        let dims: Vec<u64> = expected["ne"].as_array().expect("ne").iter().filter_map(Value::as_u64).collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        let range = header.tensor_range(info).expect("range");
        assert_eq!(range.start, expected["offset"].as_u64().expect("offset"), "{}", info.name);
        assert_eq!(range.end - range.start, expected["n_bytes"].as_u64().expect("n_bytes"), "{}", info.name);
        *histogram.entry(info.ty.name().to_string()).or_default() += 1;
    }
    let expected_histogram: BTreeMap<String, u64> = reference["quant_types"]
        .as_object()
        .expect("quant_types")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect();
    assert_eq!(histogram, expected_histogram);
}

#[test]
fn smollm2_header_matches_reference() {
    let file = open_real_model(SMOLLM2);
    check_header_against_reference(&file, &read_json(&fixture_dir().join("smollm2-135m.gguf-meta.json")));
    let header = file.header();
    assert_eq!(header.architecture().expect("arch"), "llama");
    assert_eq!(header.get_u32("llama.block_count").expect("blocks"), 30);
    assert_eq!(header.get_f32("llama.rope.freq_base").expect("rope"), 100000.0);
    assert_eq!(header.get_str_array("tokenizer.ggml.tokens").expect("tokens").len(), 49152);
    assert_eq!(file.tensor("token_embd.weight").map(|t| t.shape.clone()), Some(vec![49152, 576]));
}

#[test]
fn qwen05_header_matches_reference() {
    let file = open_real_model(QWEN05);
    check_header_against_reference(&file, &read_json(&fixture_dir().join("qwen2.5-coder-0.5b.gguf-meta.json")));
    let header = file.header();
    assert_eq!(header.architecture().expect("arch"), "qwen2");
    assert_eq!(header.get_u64("qwen2.context_length").expect("ctx"), 32768);
    assert!(!header.get_bool("tokenizer.ggml.add_bos_token").expect("add_bos"));
    assert_eq!(header.get_i32_array("tokenizer.ggml.token_type").expect("types").len(), 151936);
    assert_eq!(header.get_str("tokenizer.chat_template").expect("template").len(), 2507);
    assert_eq!(file.tensor("blk.0.ffn_down.weight").map(|t| (t.ty, t.shape.clone())), Some((GgmlType::Q6_K, vec![896, 4864])));
}

/// sum(bits(x_i) · (2i + 1)) mod 2^64, continued from element index `first_index`.
fn checksum(values: &[f32], first_index: u64) -> u64 {
    values.iter().enumerate().fold(0u64, |sum, (i, x)| {
        let weight = (first_index + i as u64).wrapping_mul(2).wrapping_add(1);
        sum.wrapping_add(u64::from(x.to_bits()).wrapping_mul(weight))
    })
}

/// Dequantizes every tensor of a real model and compares it with gguf-py: sampled rows value by
/// value, all tensors by checksum, both bit-exact (a mismatch reports its size in ulps). The
/// sampled rows of quantized tensors also go through the packed device layout.
fn check_dequantization(file: &GgufFile, model_key: &str) {
    let manifest = read_json(&fixture_dir().join("real_refs.json"));
    let refs_bytes = std::fs::read(fixture_dir().join("real_refs.safetensors")).expect("real_refs.safetensors");
    let refs = SafeTensors::deserialize(&refs_bytes).expect("refs");
    let entries = manifest["models"][model_key]["tensors"].as_array().expect("tensors");
    assert_eq!(entries.len(), file.tensors().len());

    let mut rows_checked = BTreeMap::<&str, usize>::new();
    for entry in entries {
        let name = entry["name"].as_str().expect("name");
        let meta = file.tensor(name).unwrap_or_else(|| panic!("{name} not in file"));
        assert_eq!(meta.ty.name(), entry["type"].as_str().expect("type"));
        let bytes = file.tensor_bytes(name).expect("bytes");
        let row_len = *meta.shape.last().expect("shape");
        let row_bytes = meta.ty.row_bytes(row_len).expect("row bytes");
        let n_rows = meta.n_elements() / row_len;

        // Checksum of the whole tensor, a slab of rows at a time.
        let mut sum = 0u64;
        let mut slab = Vec::new();
        const SLAB_ROWS: usize = 1024;
        for (slab_index, slab_bytes) in bytes.chunks(SLAB_ROWS * row_bytes).enumerate() {
            slab.resize(slab_bytes.len() / row_bytes * row_len, 0.0);
            quant::dequantize(meta.ty, slab_bytes, &mut slab).expect("dequantize");
            sum = sum.wrapping_add(checksum(&slab, (slab_index * SLAB_ROWS * row_len) as u64));
        }
        assert_eq!(format!("{sum:016x}"), entry["checksum"].as_str().expect("checksum"), "{name} ({})", meta.ty);

        // Sampled rows, value by value; from the disk and the packed layout.
        let packed = meta.ty.is_quantized().then(|| quant::repack(meta.ty, &bytes).expect("repack"));
        for slice in entry["slices"].as_array().expect("slices") {
            let first_row = slice["first_row"].as_u64().expect("first_row") as usize;
            let rows = slice["rows"].as_u64().expect("rows") as usize;
            let expected = refs.tensor(slice["key"].as_str().expect("key")).expect("reference rows");
            let expected: Vec<f32> = expected.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert!(first_row + rows <= n_rows);
            let mut got = vec![0f32; rows * row_len];
            let disk = &bytes[first_row * row_bytes..(first_row + rows) * row_bytes];
            quant::dequantize(meta.ty, disk, &mut got).expect("dequantize rows");
            assert_rows_equal(name, first_row, &got, &expected);
            if let Some(packed) = &packed {
                let blocks_per_row = row_len / meta.ty.block_elems();
                let n_blocks = bytes.len() / meta.ty.block_bytes();
                quant::dequantize_packed(meta.ty, packed, n_blocks, first_row * blocks_per_row, &mut got)
                    .expect("packed rows");
                assert_rows_equal(&format!("{name} (packed)"), first_row, &got, &expected);
            }
            *rows_checked.entry(meta.ty.name()).or_default() += rows;
        }
    }
    eprintln!("{model_key}: {} tensors checksummed; rows compared per type: {rows_checked:?}", entries.len());
}

fn assert_rows_equal(name: &str, first_row: usize, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{name}");
    let mut worst_ulps = 0u32;
    for (g, e) in got.iter().zip(expected) {
        worst_ulps = worst_ulps.max(g.to_bits().abs_diff(e.to_bits()));
    }
    assert_eq!(worst_ulps, 0, "{name} rows from {first_row}: up to {worst_ulps} ulp from gguf-py");
}

#[test]
fn smollm2_dequantization_matches_gguf_py() {
    let file = open_real_model(SMOLLM2);
    check_dequantization(&file, "smollm2");
}

#[test]
fn qwen05_dequantization_matches_gguf_py() {
    let file = open_real_model(QWEN05);
    check_dequantization(&file, "qwen05");
}
