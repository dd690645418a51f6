//! Hostile and broken GGUF / safetensors input: every case must end in the right typed error,
//! without panicking and without allocating memory sized by a lying count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use engine::gguf::{GgufFile, GgufHeader};
use engine::quant;
use engine::safetensors_source::SafetensorsFile;
use engine::weights::WeightSource;
use engine::EngineError;

// ---------------------------------------------------------------------------------------------
// Allocation probe: the largest single allocation made by the current thread.

struct ProbingAllocator;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for ProbingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: ProbingAllocator = ProbingAllocator;

/// Runs `f` and returns its result, how long it took and the largest allocation it made.
fn probe<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let start = Instant::now();
    let result = f();
    let elapsed = start.elapsed();
    (result, elapsed, LARGEST_ALLOCATION.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// A GGUF writer for hand-made (and deliberately wrong) files.

const TYPE_U32: u32 = 4;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;
const GGML_F32: u32 = 0;
const GGML_Q4_0: u32 = 2;

#[derive(Default)]
struct Gguf(Vec<u8>);

impl Gguf {
    fn start(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut g = Gguf::default();
        g.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        g
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.string(key).u32(TYPE_U32).u32(v)
    }
    fn kv_string(&mut self, key: &str, v: &str) -> &mut Self {
        self.string(key).u32(TYPE_STRING).string(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.string(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> Vec<u8> {
        let mut out = self.0.clone();
        out.resize(out.len().next_multiple_of(align), 0);
        out.extend((0..n).map(|i| (i * 7 + 3) as u8));
        out
    }
}

/// A valid two-tensor file: F32 [4, 2] and Q4_0 [32, 1].
fn small_valid_file(version: u32) -> Vec<u8> {
    let mut g = Gguf::start(version, 2, 2);
    g.kv_string("general.architecture", "llama").kv_u32("llama.block_count", 1);
    g.tensor("a", &[4, 2], GGML_F32, 0).tensor("b", &[32], GGML_Q4_0, 32);
    g.data(32, 32 + 18)
}

fn fixture() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant/fixture.gguf");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Everything a loader would do with a file: open, list, fetch and dequantize every tensor.
fn exercise_gguf(bytes: Vec<u8>) -> Result<(), EngineError> {
    let file = GgufFile::from_bytes(bytes)?;
    for meta in file.tensors().to_vec() {
        let data = file.tensor_bytes(&meta.name)?;
        if meta.ty.is_supported() && meta.n_elements() <= 1 << 20 {
            let mut out = vec![0f32; meta.n_elements()];
            quant::dequantize(meta.ty, &data, &mut out)?;
            let packed = quant::repack(meta.ty, &data)?;
            let n_blocks = data.len() / meta.ty.block_bytes();
            quant::dequantize_packed(meta.ty, &packed, n_blocks, 0, &mut out)?;
        }
    }
    Ok(())
}

fn parse_err(bytes: &[u8]) -> EngineError {
    GgufHeader::parse(bytes).expect_err("parse must fail")
}

// ---------------------------------------------------------------------------------------------
// GGUF

#[test]
fn valid_v2_and_v3_files_parse() {
    for version in [2, 3] {
        let bytes = small_valid_file(version);
        let file = GgufFile::from_bytes(bytes).expect("valid file");
        assert_eq!(file.header().version, version);
        // 24 (fixed) + 45 + 33 (key/values) + 41 + 33 (tensor infos) = 176, aligned to 32.
        assert_eq!(file.header().data_offset, 192);
        assert_eq!(file.tensor("a").map(|t| t.shape.clone()), Some(vec![2, 4]));
        assert_eq!(file.tensor_bytes("b").expect("b").len(), 18);
    }
}

#[test]
fn wrong_magic_and_versions() {
    let mut bytes = small_valid_file(3);
    bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(parse_err(&bytes), EngineError::BadMagic { found } if &found == b"GGML"));
    assert!(matches!(parse_err(b"PK\x03\x04 zip file"), EngineError::BadMagic { .. }));
    for version in [0u32, 1, 4, 0x0300_0000 /* a big-endian v3 file */] {
        let mut bytes = small_valid_file(3);
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        assert!(matches!(parse_err(&bytes), EngineError::UnsupportedVersion(v) if v == version), "{version}");
    }
}

#[test]
fn truncation_at_every_offset() {
    let bytes = fixture();
    let header = GgufHeader::parse(&bytes).expect("fixture");
    let data_offset = header.data_offset as usize;
    let data_end = header.tensors.iter().map(|t| header.tensor_range(t).expect("range").end).max().expect("tensors");
    let mut first_parsed = None;
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        match GgufHeader::parse(prefix) {
            Ok(parsed) => {
                // Once the tensor infos are in, the header is complete (the rest is padding).
                first_parsed.get_or_insert(cut);
                assert_eq!(parsed.tensors, header.tensors, "cut at {cut}");
                assert_eq!(parsed.data_offset, header.data_offset);
                let validated = parsed.validate_against_len(cut as u64);
                assert_eq!(validated.is_ok(), cut as u64 >= data_end, "cut at {cut}");
            }
            Err(EngineError::Truncated { offset, needed, len, .. }) => {
                assert!(first_parsed.is_none(), "cut at {cut} failed after a shorter prefix parsed");
                assert_eq!(len, cut as u64);
                // The error says how far to read to make progress.
                assert!(offset + needed > cut as u64, "cut at {cut}: offset {offset} + {needed}");
                // Knowing the real length changes nothing for a prefix.
                let with_len = GgufHeader::parse_prefix(prefix, bytes.len() as u64);
                assert!(matches!(with_len, Err(EngineError::Truncated { .. })), "cut at {cut}: {with_len:?}");
            }
            Err(other) => panic!("cut at {cut}: {other}"),
        }
        let opened = exercise_gguf(prefix.to_vec());
        assert_eq!(opened.is_ok(), cut as u64 >= data_end, "cut at {cut}: {opened:?}");
        if let Err(e) = opened {
            assert!(matches!(e, EngineError::Truncated { .. }), "cut at {cut}: {e}");
        }
    }
    let first_parsed = first_parsed.expect("some prefix parses");
    assert!(first_parsed <= data_offset && first_parsed + 64 > data_offset, "{first_parsed} vs {data_offset}");
}

#[test]
fn corrupt_bytes_never_panic() {
    let bytes = fixture();
    let data_offset = GgufHeader::parse(&bytes).expect("fixture").data_offset as usize;
    // Every header byte, flipped three ways; then random multi-byte damage anywhere.
    for pos in 0..data_offset {
        for mask in [0xFFu8, 0x80, 0x01] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= mask;
            let _ = exercise_gguf(damaged);
        }
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + next() % 8 {
            let pos = (next() % damaged.len() as u64) as usize;
            damaged[pos] = next() as u8;
        }
        let _ = exercise_gguf(damaged);
    }
}

#[test]
fn huge_counts_are_implausible() {
    let bytes = Gguf::start(3, 1 << 60, 0).data(1, 64);
    assert!(matches!(parse_err(&bytes), EngineError::ImplausibleCount { what: "tensor", count, .. } if count == 1 << 60));
    let bytes = Gguf::start(3, 0, u64::MAX).data(1, 64);
    assert!(matches!(parse_err(&bytes), EngineError::ImplausibleCount { count: u64::MAX, .. }));

    // A key claiming 2^63 bytes.
    let mut g = Gguf::start(3, 0, 1);
    g.u64(1 << 63).bytes(b"general.name");
    assert!(matches!(parse_err(&g.data(1, 64)), EngineError::ImplausibleCount { what: "metadata key", .. }));
    // A string value claiming 2^63 bytes.
    let mut g = Gguf::start(3, 0, 1);
    g.string("general.name").u32(TYPE_STRING).u64(1 << 63);
    assert!(matches!(parse_err(&g.data(1, 64)), EngineError::ImplausibleCount { what: "metadata string", .. }));
    // Arrays of 2^62 u32s and of 2^40 strings.
    for (item_type, len) in [(TYPE_U32, 1u64 << 62), (TYPE_STRING, 1 << 40)] {
        let mut g = Gguf::start(3, 0, 1);
        g.string("tokenizer.ggml.tokens").u32(TYPE_ARRAY).u32(item_type).u64(len);
        let err = parse_err(&g.data(1, 64));
        assert!(matches!(err, EngineError::ImplausibleCount { what: "metadata array length", count, .. } if count == len), "{err}");
    }
    // A tensor name claiming 2^63 bytes.
    let mut g = Gguf::start(3, 1, 0);
    g.u64(1 << 63);
    assert!(matches!(parse_err(&g.data(1, 64)), EngineError::ImplausibleCount { what: "tensor name", .. }));

    // With the file length known, anything that cannot fit in it is implausible right away.
    let mut g = Gguf::start(3, 1000, 0);
    g.tensor("t0", &[4], GGML_F32, 0);
    let bytes = g.data(1, 0);
    assert!(matches!(GgufHeader::parse_prefix(&bytes, 1024), Err(EngineError::ImplausibleCount { len: 1024, .. })));
    assert!(matches!(GgufHeader::parse(&bytes), Err(EngineError::Truncated { .. })));
}

#[test]
fn a_kib_claiming_2_pow_40_tensors_allocates_nothing() {
    // The probe itself works.
    let (v, _, largest) = probe(|| vec![1u8; 100_000]);
    assert!(largest >= 100_000 && v.len() == 100_000);

    let mut bytes = Gguf::start(3, 1 << 40, 0).data(1, 0);
    bytes.resize(1024, 0x41);
    let (result, elapsed, largest) = probe(|| GgufHeader::parse(&bytes));
    assert!(matches!(result, Err(EngineError::ImplausibleCount { count, .. }) if count == 1 << 40), "{result:?}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert!(largest < 4096, "allocated {largest} bytes");

    // Counts below the plausibility cap that the bytes cannot back: reservations stay bounded by
    // the bytes actually present, and the parse ends in Truncated.
    for (n_tensors, n_kv) in [(1 << 20, 0), (0, 1 << 20)] {
        let mut g = Gguf::start(3, n_tensors, n_kv);
        for i in 0..8 {
            if n_kv > 0 {
                g.kv_u32(&format!("k{i}"), i);
            } else {
                g.tensor(&format!("t{i}"), &[32], GGML_F32, 128 * i as u64);
            }
        }
        let bytes = g.data(1, 0);
        let (result, _, largest) = probe(|| GgufHeader::parse(&bytes));
        assert!(matches!(result, Err(EngineError::Truncated { .. })), "{result:?}");
        assert!(largest < 16 * 1024, "allocated {largest} bytes for a {}-byte file", bytes.len());
    }
    let mut g = Gguf::start(3, 0, 1);
    g.string("tokenizer.ggml.tokens").u32(TYPE_ARRAY).u32(TYPE_STRING).u64(1 << 24);
    let mut bytes = g.data(1, 0);
    bytes.resize(bytes.len() + 100, 0); // twelve empty strings, then the file ends
    let (result, _, largest) = probe(|| GgufHeader::parse(&bytes));
    assert!(matches!(result, Err(EngineError::Truncated { .. })), "{result:?}");
    assert!(largest < 16 * 1024, "allocated {largest} bytes");
}

#[test]
fn unknown_types() {
    for id in [4u32, 5, 31, 99, u32::MAX] {
        let mut g = Gguf::start(3, 1, 0);
        g.tensor("t", &[32], id, 0);
        assert!(matches!(parse_err(&g.data(32, 128)), EngineError::UnknownTensorType(i) if i == id), "{id}");
    }
    let mut g = Gguf::start(3, 0, 1);
    g.string("k").u32(13).u32(0);
    assert!(matches!(parse_err(&g.data(1, 8)), EngineError::UnknownMetaType(13)));
    let mut g = Gguf::start(3, 0, 1);
    g.string("k").u32(TYPE_ARRAY).u32(77).u64(1).u32(0);
    assert!(matches!(parse_err(&g.data(1, 8)), EngineError::UnknownMetaType(77)));
    // Known but unsupported tensor types parse and fail at use.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[256], 10 /* Q2_K */, 0);
    let file = GgufFile::from_bytes(g.data(32, 84)).expect("Q2_K parses");
    let bytes = file.tensor_bytes("t").expect("raw bytes");
    let err = quant::dequantize(file.tensors()[0].ty, &bytes, &mut [0f32; 256]).expect_err("unsupported");
    assert!(matches!(err, EngineError::UnsupportedTensorType(_)));
}

#[test]
fn bad_tensor_infos() {
    let corrupt = |g: &mut Gguf| match parse_err(&g.data(32, 4096)) {
        EngineError::Corrupt { detail, .. } => detail,
        other => panic!("expected Corrupt, got {other}"),
    };
    // 9 dimensions.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[1; 9], GGML_F32, 0);
    assert!(corrupt(&mut g).contains("9 dimensions"));
    // Element count overflow, also when a zero dimension hides it.
    for dims in [[1u64 << 32, 1 << 32, 1 << 32], [0, 1 << 40, 1 << 40]] {
        let mut g = Gguf::start(3, 1, 0);
        g.tensor("t", &dims, GGML_F32, 0);
        assert!(corrupt(&mut g).contains("overflows"), "{dims:?}");
    }
    // Dimension beyond i64.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[u64::MAX], GGML_F32, 0);
    assert!(corrupt(&mut g).contains("out of range"));
    // A row that is not whole blocks.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[33, 2], GGML_Q4_0, 0);
    assert!(corrupt(&mut g).contains("block"));
    // Misaligned offset.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[4], GGML_F32, 3);
    assert!(corrupt(&mut g).contains("alignment"));
    // Offset + size overflowing u64.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[64], GGML_F32, u64::MAX - 31);
    assert!(corrupt(&mut g).contains("overflows"));
    // Duplicate names.
    let mut g = Gguf::start(3, 2, 0);
    g.tensor("t", &[4], GGML_F32, 0).tensor("t", &[4], GGML_F32, 32);
    assert!(corrupt(&mut g).contains("duplicate tensor"));
    // Duplicate keys.
    let mut g = Gguf::start(3, 0, 2);
    g.kv_u32("k", 1).kv_u32("k", 2);
    assert!(corrupt(&mut g).contains("duplicate key"));
    // Alignment that is not a power of two.
    for alignment in [0u32, 48] {
        let mut g = Gguf::start(3, 0, 1);
        g.kv_u32("general.alignment", alignment);
        assert!(corrupt(&mut g).contains("power of two"), "{alignment}");
    }
    // Arrays nested 100 deep: rejected without recursing that far.
    let mut g = Gguf::start(3, 0, 1);
    g.string("k").u32(TYPE_ARRAY);
    for _ in 0..100 {
        g.u32(TYPE_ARRAY).u64(1);
    }
    g.u32(TYPE_U32).u64(0);
    assert!(corrupt(&mut g).contains("nested"));
}

#[test]
fn tensor_data_outside_the_file() {
    // Offset aligned and plausible, but past the end of the file.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[8], GGML_F32, 1 << 20);
    let bytes = g.data(32, 64);
    let header = GgufHeader::parse(&bytes).expect("header alone is fine");
    assert!(matches!(header.validate_against_len(bytes.len() as u64), Err(EngineError::Truncated { what: "tensor data", .. })));
    assert!(matches!(GgufFile::from_bytes(bytes), Err(EngineError::Truncated { .. })));
    // Tensor data overlapping the end by one byte.
    let mut g = Gguf::start(3, 1, 0);
    g.tensor("t", &[8], GGML_F32, 0);
    let bytes = g.data(32, 31);
    assert!(matches!(GgufFile::from_bytes(bytes), Err(EngineError::Truncated { .. })));
}

// ---------------------------------------------------------------------------------------------
// safetensors

fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn safetensors_err(bytes: Vec<u8>) -> String {
    match SafetensorsFile::from_bytes(bytes) {
        Err(EngineError::Safetensors(detail)) => detail,
        Err(other) => panic!("expected a safetensors error, got {other}"),
        Ok(_) => panic!("expected a safetensors error, got a file"),
    }
}

#[test]
fn bad_safetensors() {
    let good_header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let good = safetensors_file(good_header, &[0; 8]);
    SafetensorsFile::from_bytes(good.clone()).expect("valid");
    SafetensorsFile::from_bytes(safetensors_file("{}", &[])).expect("empty checkpoint");

    // Header length: beyond the file, absurd, shorter than 8 bytes of prefix.
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    safetensors_err(long);
    let mut absurd = good.clone();
    absurd[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    safetensors_err(absurd);
    safetensors_err(vec![1, 2, 3]);
    safetensors_err(Vec::new());
    // Bad JSON, wrong JSON shapes, invalid UTF-8.
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","#, &[0; 8]));
    safetensors_err(safetensors_file(r#"[1,2,3]"#, &[]));
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","shape":"x","data_offsets":[0,8]}}"#, &[0; 8]));
    let mut not_utf8 = safetensors_file(r#"{"w":1}"#, &[]);
    not_utf8[10] = 0xFF;
    safetensors_err(not_utf8);
    // Unknown dtype.
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]));
    // Offsets out of range, reversed, overlapping, leaving a gap; data length vs shape.
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, &[0; 8]));
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, &[0; 8]));
    safetensors_err(safetensors_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    ));
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, &[0; 12]));
    safetensors_err(safetensors_file(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]));
    safetensors_err(safetensors_file(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    // Trailing bytes after the data.
    safetensors_err(safetensors_file(good_header, &[0; 9]));
}

#[test]
fn safetensors_truncated_and_corrupted() {
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}}"#;
    let bytes = safetensors_file(header, &[0x3F; 20]);
    for cut in 0..bytes.len() {
        assert!(SafetensorsFile::from_bytes(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    for pos in 0..bytes.len() {
        for mask in [0xFFu8, 0x01, 0x20] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= mask;
            if let Ok(file) = SafetensorsFile::from_bytes(damaged) {
                for meta in file.tensors() {
                    let data = file.tensor_bytes(&meta.name).expect("listed tensors are readable");
                    let mut out = vec![0f32; meta.n_elements()];
                    let _ = quant::dequantize(meta.ty, &data, &mut out);
                }
            }
        }
    }
}
