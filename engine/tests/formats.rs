//! GGUF / safetensors readers and dequantizers on the committed fixtures
//! (`tests/fixtures/quant/`, made by `gen_fixtures.py` with gguf-py 0.19).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use engine::gguf::{GgufFile, GgufHeader, MetaValue};
use engine::quant::{self, GgmlType};
use engine::safetensors_source::{SafetensorsFile, ShardedSafetensors};
use engine::weights::{SourceFormat, WeightSource};
use engine::EngineError;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Bit-exact equality, where any NaN equals any NaN (payload conversions are not the point).
fn assert_same_bits(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        let same = g.to_bits() == e.to_bits() || (g.is_nan() && e.is_nan());
        assert!(same, "{what}[{i}]: got {g:e} ({:#010x}), gguf-py {e:e} ({:#010x})", g.to_bits(), e.to_bits());
    }
}

#[test]
fn fixture_header_and_metadata() {
    let bytes = read_fixture("fixture.gguf");
    let header = GgufHeader::parse(&bytes).expect("parse");
    header.validate_against_len(bytes.len() as u64).expect("validate");
    assert_eq!(header.version, 3);
    assert_eq!(header.alignment, 64);
    assert_eq!(header.data_offset % 64, 0);
    assert_eq!(header.architecture().expect("arch"), "qwglm-fixture");
    assert_eq!(header.get_u32("general.alignment").expect("alignment"), 64);

    let expect = |key: &str, value: MetaValue| assert_eq!(header.get(key), Some(&value), "{key}");
    expect("fixture.u8", MetaValue::U8(200));
    expect("fixture.i8", MetaValue::I8(-100));
    expect("fixture.u16", MetaValue::U16(60000));
    expect("fixture.i16", MetaValue::I16(-30000));
    expect("fixture.u32", MetaValue::U32(4_000_000_000));
    expect("fixture.i32", MetaValue::I32(-2_000_000_000));
    expect("fixture.u64", MetaValue::U64((1 << 63) + 5));
    expect("fixture.i64", MetaValue::I64(-(1 << 62)));
    expect("fixture.f32", MetaValue::F32(0.1));
    expect("fixture.f64", MetaValue::F64(0.1));
    expect("fixture.bool", MetaValue::Bool(true));
    expect("fixture.string", MetaValue::String("héllo, 世界 🦀".into()));
    let strings = |items: &[&str]| MetaValue::Array(items.iter().map(|s| MetaValue::String(s.to_string())).collect());
    expect("fixture.nested_array", MetaValue::Array(vec![strings(&["x", "y"]), strings(&["z"])]));
    expect("fixture.str_array", strings(&["a", "", "ü"]));

    // Typed accessors: integer widening, range checks, type errors, missing keys.
    assert_eq!(header.get_u32("fixture.u8").ok(), Some(200));
    assert_eq!(header.get_u32("fixture.u16").ok(), Some(60000));
    assert_eq!(header.get_u64("fixture.u64").ok(), Some((1 << 63) + 5));
    assert!(matches!(header.get_u32("fixture.u64"), Err(EngineError::MetadataType { .. })));
    assert!(matches!(header.get_u32("fixture.i8"), Err(EngineError::MetadataType { .. })));
    assert!(matches!(header.get_u64("fixture.string"), Err(EngineError::MetadataType { .. })));
    assert_eq!(header.get_f32("fixture.f32").ok(), Some(0.1));
    assert_eq!(header.get_f32("fixture.f64").ok(), Some(0.1));
    assert!(header.get_bool("fixture.bool").expect("bool"));
    assert_eq!(header.get_str("fixture.string").ok(), Some("héllo, 世界 🦀"));
    assert_eq!(header.get_str_array("fixture.str_array").expect("strs"), ["a", "", "ü"]);
    assert_eq!(header.get_i32_array("fixture.i32_array").expect("i32s"), [1, -2, 3]);
    assert_eq!(header.get_f32_array("fixture.f32_array").expect("f32s"), [0.5, -1.25]);
    assert!(matches!(header.get_str_array("fixture.i32_array"), Err(EngineError::MetadataType { .. })));
    assert!(matches!(header.get_bool("fixture.u8"), Err(EngineError::MetadataType { .. })));
    assert!(matches!(header.get_str("no.such.key"), Err(EngineError::MissingMetadata(k)) if k == "no.such.key"));

    // Parsing just the header prefix gives the same result.
    let prefix = &bytes[..header.data_offset as usize];
    let again = GgufHeader::parse(prefix).expect("prefix");
    assert_eq!(again.tensors, header.tensors);
    assert_eq!(again.metadata, header.metadata);
    let again = GgufHeader::parse_prefix(prefix, bytes.len() as u64).expect("prefix with length");
    assert_eq!(again.data_offset, header.data_offset);
}

#[test]
fn fixture_tensor_list() {
    let file = GgufFile::from_bytes(read_fixture("fixture.gguf")).expect("open");
    assert_eq!(file.format(), SourceFormat::Gguf);
    let listed: Vec<(&str, GgmlType, &[usize])> =
        file.tensors().iter().map(|t| (t.name.as_str(), t.ty, t.shape.as_slice())).collect();
    let expected: Vec<(&str, GgmlType, &[usize])> = vec![
        ("plain.f32", GgmlType::F32, &[2, 3, 40]),
        ("plain.f16", GgmlType::F16, &[4, 24]),
        ("plain.bf16", GgmlType::BF16, &[4, 24]),
        ("quant.q4_0", GgmlType::Q4_0, &[8, 64]),
        ("quant.q4_1", GgmlType::Q4_1, &[8, 64]),
        ("quant.q5_0", GgmlType::Q5_0, &[8, 64]),
        ("quant.q5_1", GgmlType::Q5_1, &[8, 64]),
        ("quant.q8_0", GgmlType::Q8_0, &[8, 64]),
        ("quant.q4_k", GgmlType::Q4_K, &[4, 512]),
        ("quant.q5_k", GgmlType::Q5_K, &[4, 512]),
        ("quant.q6_k", GgmlType::Q6_K, &[4, 512]),
        ("unsupported.q2_k", GgmlType::Q2_K, &[1, 256]),
    ];
    assert_eq!(listed, expected);
    for meta in file.tensors() {
        let bytes = file.tensor_bytes(&meta.name).expect("bytes");
        assert_eq!(bytes.len(), meta.ty.row_bytes(meta.n_elements()).expect("size"), "{}", meta.name);
        assert_eq!(file.tensor(&meta.name), Some(meta));
    }
    assert!(matches!(file.tensor_bytes("nope"), Err(EngineError::MissingTensor(n)) if n == "nope"));

    // The unsupported type is listed, and fails when used.
    let q2k = file.tensor_bytes("unsupported.q2_k").expect("raw bytes");
    let mut out = vec![0f32; 256];
    let err = quant::dequantize(GgmlType::Q2_K, &q2k, &mut out).expect_err("Q2_K is unsupported");
    assert!(matches!(err, EngineError::UnsupportedTensorType(ref name) if name == "Q2_K"), "{err}");
    assert!(matches!(quant::repack(GgmlType::Q2_K, &q2k), Err(EngineError::UnsupportedTensorType(_))));
}

/// Every supported fixture tensor dequantizes exactly as gguf-py does, from the disk layout and
/// from the packed device layout (row by row, as the reference kernels read it).
#[test]
fn fixture_dequantization_matches_gguf_py() {
    let file = GgufFile::from_bytes(read_fixture("fixture.gguf")).expect("open");
    let refs_bytes = read_fixture("fixture_ref.safetensors");
    let refs = SafeTensors::deserialize(&refs_bytes).expect("refs");
    let mut checked = Vec::new();
    for meta in file.tensors().iter().filter(|t| t.ty.is_supported()) {
        let reference = refs.tensor(&meta.name).expect("reference tensor");
        assert_eq!(reference.shape(), meta.shape.as_slice(), "{}", meta.name);
        let expected = f32s(reference.data());

        let bytes = file.tensor_bytes(&meta.name).expect("bytes");
        let mut got = vec![0f32; meta.n_elements()];
        quant::dequantize(meta.ty, &bytes, &mut got).expect("dequantize");
        assert_same_bits(&meta.name, &got, &expected);

        let packed = quant::repack(meta.ty, &bytes).expect("repack");
        let n_blocks = bytes.len() / meta.ty.block_bytes();
        let cols = *meta.shape.last().expect("shape");
        let blocks_per_row = cols / meta.ty.block_elems();
        let mut row = vec![0f32; cols];
        for (r, expected_row) in expected.chunks_exact(cols).enumerate() {
            quant::dequantize_packed(meta.ty, &packed, n_blocks, r * blocks_per_row, &mut row).expect("packed");
            assert_same_bits(&format!("{} packed row {r}", meta.name), &row, expected_row);
        }
        checked.push(meta.ty);
    }
    assert_eq!(checked.len(), 11, "one tensor per supported type: {checked:?}");
}

// ---------------------------------------------------------------------------------------------
// safetensors

fn tensor_bytes_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small checkpoint with usable, listed-but-unsupported and unrepresentable dtypes.
fn sample_safetensors() -> Vec<u8> {
    let weight = tensor_bytes_f32(&[1.0, -2.0, 3.5, 0.25, 8.0, -0.5]);
    let half: Vec<u8> = [1.5f32, -3.0, 0.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let brain: Vec<u8> = [2.0f32, -0.125].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let ids: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mask = [1u8, 0, 1];
    let tensors = vec![
        ("model.weight", TensorView::new(Dtype::F32, vec![2, 3], &weight).expect("view")),
        ("model.norm", TensorView::new(Dtype::F16, vec![3], &half).expect("view")),
        ("model.bias", TensorView::new(Dtype::BF16, vec![1, 2], &brain).expect("view")),
        ("position_ids", TensorView::new(Dtype::I64, vec![2], &ids).expect("view")),
        ("attn.masked_bias", TensorView::new(Dtype::BOOL, vec![3], &mask).expect("view")),
    ];
    let info = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors, Some(info)).expect("serialize")
}

#[test]
fn safetensors_file_lists_and_reads_tensors() {
    let file = SafetensorsFile::from_bytes(sample_safetensors()).expect("open");
    assert_eq!(file.format(), SourceFormat::Safetensors);
    assert_eq!(file.metadata().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    let mut names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["model.bias", "model.norm", "model.weight", "position_ids"]);

    let weight = file.tensor("model.weight").expect("weight");
    assert_eq!((weight.ty, weight.shape.as_slice()), (GgmlType::F32, &[2usize, 3][..]));
    let mut out = vec![0f32; 6];
    quant::dequantize(weight.ty, &file.tensor_bytes("model.weight").expect("bytes"), &mut out).expect("f32");
    assert_eq!(out, [1.0, -2.0, 3.5, 0.25, 8.0, -0.5]);

    let mut out = vec![0f32; 3];
    quant::dequantize(GgmlType::F16, &file.tensor_bytes("model.norm").expect("bytes"), &mut out).expect("f16");
    assert_eq!(out, [1.5, -3.0, 0.0]);
    let mut out = vec![0f32; 2];
    quant::dequantize(GgmlType::BF16, &file.tensor_bytes("model.bias").expect("bytes"), &mut out).expect("bf16");
    assert_eq!(out, [2.0, -0.125]);

    // I64 is listed with its type but cannot be dequantized; BOOL has no engine type at all.
    let ids = file.tensor("position_ids").expect("ids");
    assert_eq!(ids.ty, GgmlType::I64);
    let ids_bytes = file.tensor_bytes("position_ids").expect("raw ids");
    assert!(matches!(quant::dequantize(ids.ty, &ids_bytes, &mut out), Err(EngineError::UnsupportedTensorType(_))));
    assert!(matches!(file.tensor_bytes("attn.masked_bias"), Err(EngineError::UnsupportedTensorType(_))));
    assert!(matches!(file.tensor_bytes("missing"), Err(EngineError::MissingTensor(_))));

    // File order is data order.
    let offsets: Vec<usize> = file
        .tensors()
        .iter()
        .map(|t| {
            let bytes = file.tensor_bytes(&t.name).expect("bytes");
            bytes.as_ptr() as usize - file.bytes().as_ptr() as usize
        })
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
}

#[test]
fn sharded_safetensors() {
    let dir = std::env::temp_dir().join(format!("qwglm-formats-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let a = tensor_bytes_f32(&[1.0, 2.0]);
    let b = tensor_bytes_f32(&[3.0, 4.0, 5.0]);
    let shard1 = safetensors::serialize([("a", TensorView::new(Dtype::F32, vec![2], &a).expect("view"))], None)
        .expect("shard 1");
    let shard2 = safetensors::serialize([("b", TensorView::new(Dtype::F32, vec![3], &b).expect("view"))], None)
        .expect("shard 2");
    std::fs::write(dir.join("model-00001-of-00002.safetensors"), &shard1).expect("write");
    std::fs::write(dir.join("model-00002-of-00002.safetensors"), &shard2).expect("write");
    let index = r#"{"metadata": {"total_size": 20}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).expect("write");

    let sharded = ShardedSafetensors::open(dir.join("model.safetensors.index.json")).expect("open");
    assert_eq!(sharded.tensors().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(sharded.tensor_bytes("b").expect("b").as_ref(), b.as_slice());
    assert_eq!(sharded.tensor("a").map(|t| t.shape.clone()), Some(vec![2]));
    assert!(matches!(sharded.tensor_bytes("c"), Err(EngineError::MissingTensor(_))));
    std::fs::remove_dir_all(&dir).ok();

    // In memory: a weight map naming a tensor its shard lacks, unsafe shard paths, bad JSON.
    let load = |name: &str| -> engine::Result<SafetensorsFile> {
        SafetensorsFile::from_bytes(if name.contains("00001") { shard1.clone() } else { shard2.clone() })
    };
    let wrong = br#"{"weight_map": {"a": "model-00002-of-00002.safetensors"}}"#;
    assert!(matches!(ShardedSafetensors::from_index(wrong, load), Err(EngineError::MissingTensor(_))));
    let escape = br#"{"weight_map": {"a": "../../etc/model-00001.safetensors"}}"#;
    assert!(matches!(ShardedSafetensors::from_index(escape, load), Err(EngineError::Safetensors(_))));
    assert!(matches!(ShardedSafetensors::from_index(b"{", load), Err(EngineError::Json { .. })));
    let both = br#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}}"#;
    assert!(matches!(ShardedSafetensors::from_index(both, load), Err(EngineError::MissingTensor(_))));
}
