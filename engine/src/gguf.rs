//! GGUF v2/v3 reader: header, metadata, tensor infos, alignment. Parses from a byte prefix, so a
//! streaming source (IndexedDB chunks) can parse the header before the tensor data arrives.
//!
//! Layout (little-endian): magic `GGUF`, version u32, tensor count u64, metadata count u64,
//! metadata key/values, tensor infos (name, n_dims u32, dims u64 × n_dims, type u32, offset u64),
//! padding to `general.alignment` (default 32), then the tensor data.
//!
//! Hardening: the file decides every count and length, so each one is checked against the bytes it
//! would need *before* anything is allocated, and collections only grow as items are actually read.
//! All size arithmetic is checked; nothing here panics on any input.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::error::{EngineError, Result};
use crate::quant::GgmlType;
use crate::weights::{SourceFormat, TensorMeta, WeightSource};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of metadata arrays accepted (real files use at most 1); bounds recursion.
pub const MAX_ARRAY_NESTING: usize = 8;
/// Largest header (metadata + tensor infos) considered plausible. Real headers are a few MB
/// (a 256k-token vocabulary is ~5 MB); a count implying more than this is a corrupt file.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;

/// A metadata value. Arrays keep their element type so `inspect` can print them faithfully.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

/// GGUF metadata value type ids.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;

    /// Fewest bytes one value of this type occupies (strings: the length; arrays: type + count).
    pub fn min_size(ty: u32) -> Option<u64> {
        Some(match ty {
            U8 | I8 | BOOL => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | STRING => 8,
            ARRAY => 12,
            _ => return None,
        })
    }
}

impl MetaValue {
    /// The value as an unsigned integer, if it is an integer ≥ 0 (of any width).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// GGUF's name for the value's type, for messages and `inspect`.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }
}

/// One tensor as described in the GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (innermost) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the tensor data relative to the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements (1 for a 0-dimensional tensor), overflow-checked. The product of the
    /// non-zero dimensions must fit too, so that no partial product, in any order, overflows.
    pub fn n_elements(&self) -> Result<u64> {
        let nonzero_product = self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d.max(1)));
        match nonzero_product {
            Some(_) if self.dims.contains(&0) => Ok(0),
            Some(n) => Ok(n),
            None => Err(EngineError::corrupt(
                "tensor info",
                format!("`{}`: element count of {:?} overflows", self.name, self.dims),
            )),
        }
    }

    /// Bytes of tensor data: whole blocks along `dims[0]`, overflow-checked.
    pub fn n_bytes(&self) -> Result<u64> {
        let bad = |detail: String| EngineError::corrupt("tensor info", format!("`{}`: {detail}", self.name));
        let n_elements = self.n_elements()?;
        let row = self.dims.first().copied().unwrap_or(1);
        let block_elems = self.ty.block_elems() as u64;
        if row % block_elems != 0 {
            return Err(bad(format!("row of {row} is not a whole number of {} blocks of {block_elems}", self.ty)));
        }
        (n_elements / block_elems)
            .checked_mul(self.ty.block_bytes() as u64)
            .ok_or_else(|| bad(format!("byte size of {:?} {} overflows", self.dims, self.ty)))
    }

    /// Row-major shape, outermost first (the reverse of ggml's `dims`).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the (aligned) data section.
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parses the header from the start of a file: `bytes` may be the whole file or any prefix of
    /// it. If it ends inside the header the error is `Truncated`, whose `offset + needed` says how
    /// much more to fetch. Counts implying a header beyond `MAX_HEADER_BYTES` are `ImplausibleCount`.
    /// Tensor data is not looked at: call `validate_against_len` once the file length is known.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Reader::new(bytes, MAX_HEADER_BYTES, bytes.len() as u64).header()
    }

    /// Like `parse`, for the first bytes of a file whose total length is known: a count that could
    /// not fit in `file_len` bytes is `ImplausibleCount` right away instead of a later `Truncated`.
    pub fn parse_prefix(prefix: &[u8], file_len: u64) -> Result<Self> {
        let usable = usize::try_from(file_len).map_or(prefix, |len| prefix.get(..len).unwrap_or(prefix));
        Reader::new(usable, file_len.min(MAX_HEADER_BYTES), file_len).header()
    }

    /// Checks that every tensor's data lies inside a file of `file_len` bytes.
    pub fn validate_against_len(&self, file_len: u64) -> Result<()> {
        for tensor in &self.tensors {
            let range = self.tensor_range(tensor)?;
            if range.end > file_len {
                return Err(EngineError::Truncated {
                    what: "tensor data",
                    offset: range.start,
                    needed: range.end - range.start,
                    len: file_len,
                });
            }
        }
        Ok(())
    }

    /// Absolute byte range of a tensor's data in the file, overflow-checked.
    pub fn tensor_range(&self, tensor: &GgufTensorInfo) -> Result<std::ops::Range<u64>> {
        let n_bytes = tensor.n_bytes()?;
        let start = self.data_offset.checked_add(tensor.offset);
        let end = start.and_then(|start| start.checked_add(n_bytes));
        match (start, end) {
            (Some(start), Some(end)) => Ok(start..end),
            _ => Err(EngineError::corrupt("tensor info", format!("`{}`: data offset overflows", tensor.name))),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| EngineError::MissingMetadata(key.to_string()))
    }

    fn wrong_type(key: &str, expected: &'static str) -> EngineError {
        EngineError::MetadataType { key: key.to_string(), expected }
    }

    /// Any integer value that fits u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let value = self.require(key)?;
        value.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| Self::wrong_type(key, "u32"))
    }

    /// Any non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?.as_u64().ok_or_else(|| Self::wrong_type(key, "u64"))
    }

    /// An f32 (or an f64, rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match *self.require(key)? {
            MetaValue::F32(v) => Ok(v),
            MetaValue::F64(v) => Ok(v as f32),
            _ => Err(Self::wrong_type(key, "f32")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match *self.require(key)? {
            MetaValue::Bool(v) => Ok(v),
            _ => Err(Self::wrong_type(key, "bool")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.require(key)?.as_str().ok_or_else(|| Self::wrong_type(key, "string"))
    }

    fn get_array(&self, key: &str, expected: &'static str) -> Result<&[MetaValue]> {
        match self.require(key)? {
            MetaValue::Array(items) => Ok(items),
            _ => Err(Self::wrong_type(key, expected)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        const EXPECTED: &str = "array of strings";
        let items = self.get_array(key, EXPECTED)?;
        items.iter().map(|v| v.as_str().ok_or_else(|| Self::wrong_type(key, EXPECTED))).collect()
    }

    /// An array of integers that all fit i32 (of any integer element type).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        const EXPECTED: &str = "array of i32";
        let items = self.get_array(key, EXPECTED)?;
        items
            .iter()
            .map(|v| v.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or_else(|| Self::wrong_type(key, EXPECTED)))
            .collect()
    }

    /// An array of f32 (f64 elements are rounded to f32).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        const EXPECTED: &str = "array of f32";
        let items = self.get_array(key, EXPECTED)?;
        items
            .iter()
            .map(|v| match *v {
                MetaValue::F32(x) => Ok(x),
                MetaValue::F64(x) => Ok(x as f32),
                _ => Err(Self::wrong_type(key, EXPECTED)),
            })
            .collect()
    }

    /// `general.architecture`, e.g. `"qwen2"` or `"llama"`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }
}

/// A bounds-checked cursor over the header bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Absolute offset no header item may extend past (the file length or `MAX_HEADER_BYTES`).
    plausible_end: u64,
    /// File length reported in errors.
    reported_len: u64,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], plausible_end: u64, reported_len: u64) -> Self {
        Self { bytes, pos: 0, plausible_end, reported_len }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let slice = self.pos.checked_add(n).and_then(|end| self.bytes.get(self.pos..end));
        let Some(slice) = slice else {
            return Err(EngineError::Truncated {
                what,
                offset: self.pos as u64,
                needed: n as u64,
                len: self.bytes.len() as u64,
            });
        };
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let slice = self.take(N, what)?;
        slice.try_into().map_err(|_| EngineError::corrupt(what, "short read"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a u64 count of items of at least `min_item_bytes` each and checks that they could fit
    /// before the plausible end of the header. The caller never allocates more than the bytes left
    /// in `self.bytes` can hold, so a lying count costs nothing.
    fn count(&mut self, what: &'static str, min_item_bytes: u64) -> Result<usize> {
        let count = self.u64(what)?;
        let implausible = EngineError::ImplausibleCount { what, count, len: self.reported_len };
        let fits = count
            .checked_mul(min_item_bytes)
            .and_then(|bytes| bytes.checked_add(self.pos as u64))
            .is_some_and(|end| end <= self.plausible_end);
        if !fits {
            return Err(implausible);
        }
        usize::try_from(count).map_err(|_| implausible)
    }

    /// Capacity to reserve for `count` items: no more than the remaining bytes could hold.
    fn capacity_for(&self, count: usize, min_item_bytes: usize) -> usize {
        count.min(self.bytes.len().saturating_sub(self.pos) / min_item_bytes.max(1))
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let len = self.count(what, 1)?;
        let bytes = self.take(len, what)?;
        // GGUF strings are UTF-8; a stray invalid byte (seen in some vocabularies) should not make
        // the whole file unreadable, so it is replaced rather than rejected.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        use value_type as t;
        const WHAT: &str = "metadata value";
        Ok(match ty {
            t::U8 => MetaValue::U8(u8::from_le_bytes(self.array(WHAT)?)),
            t::I8 => MetaValue::I8(i8::from_le_bytes(self.array(WHAT)?)),
            t::U16 => MetaValue::U16(u16::from_le_bytes(self.array(WHAT)?)),
            t::I16 => MetaValue::I16(i16::from_le_bytes(self.array(WHAT)?)),
            t::U32 => MetaValue::U32(u32::from_le_bytes(self.array(WHAT)?)),
            t::I32 => MetaValue::I32(i32::from_le_bytes(self.array(WHAT)?)),
            t::F32 => MetaValue::F32(f32::from_le_bytes(self.array(WHAT)?)),
            t::U64 => MetaValue::U64(u64::from_le_bytes(self.array(WHAT)?)),
            t::I64 => MetaValue::I64(i64::from_le_bytes(self.array(WHAT)?)),
            t::F64 => MetaValue::F64(f64::from_le_bytes(self.array(WHAT)?)),
            t::BOOL => MetaValue::Bool(self.array::<1>(WHAT)?[0] != 0),
            t::STRING => MetaValue::String(self.string("metadata string")?),
            t::ARRAY => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(EngineError::corrupt(
                        "metadata array",
                        format!("nested deeper than {MAX_ARRAY_NESTING} levels"),
                    ));
                }
                let item_ty = self.u32("metadata array type")?;
                let min_item = t::min_size(item_ty).ok_or(EngineError::UnknownMetaType(item_ty))?;
                let len = self.count("metadata array length", min_item)?;
                let mut items = Vec::with_capacity(self.capacity_for(len, min_item as usize));
                for _ in 0..len {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            other => return Err(EngineError::UnknownMetaType(other)),
        })
    }

    fn header(mut self) -> Result<GgufHeader> {
        let magic: [u8; 4] = self.array("GGUF magic")?;
        if magic != GGUF_MAGIC {
            return Err(EngineError::BadMagic { found: magic });
        }
        let version = self.u32("GGUF version")?;
        if !(2..=3).contains(&version) {
            return Err(EngineError::UnsupportedVersion(version));
        }
        // Smallest encodings: a tensor info is name length + n_dims + type + offset; a key/value is
        // key length + value type + a 1-byte value.
        const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;
        const MIN_KEY_VALUE: u64 = 8 + 4 + 1;
        let tensor_count = self.count("tensor", MIN_TENSOR_INFO)?;
        let kv_count = self.count("metadata key/value", MIN_KEY_VALUE)?;

        let mut metadata = Vec::with_capacity(self.capacity_for(kv_count, MIN_KEY_VALUE as usize));
        let mut keys = HashSet::new();
        for _ in 0..kv_count {
            let key = self.string("metadata key")?;
            let ty = self.u32("metadata value type")?;
            let value = self.value(ty, 0)?;
            if !keys.insert(key.clone()) {
                return Err(EngineError::corrupt("metadata", format!("duplicate key `{key}`")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, value)) => match value.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(EngineError::corrupt(
                        "metadata",
                        format!("general.alignment {value:?} is not a power of two"),
                    ))
                }
            },
        };

        let mut tensors: Vec<GgufTensorInfo> =
            Vec::with_capacity(self.capacity_for(tensor_count, MIN_TENSOR_INFO as usize));
        let mut names = HashSet::new();
        for _ in 0..tensor_count {
            let tensor = self.tensor_info(alignment)?;
            if !names.insert(tensor.name.clone()) {
                return Err(EngineError::corrupt("tensor info", format!("duplicate tensor `{}`", tensor.name)));
            }
            tensors.push(tensor);
        }

        let header_end = self.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| EngineError::corrupt("GGUF header", "data offset overflows"))?;
        let header = GgufHeader { version, metadata, tensors, alignment, data_offset };
        // Sizes and end offsets must be representable, whatever the file length turns out to be.
        for tensor in &header.tensors {
            header.tensor_range(tensor)?;
        }
        Ok(header)
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<GgufTensorInfo> {
        let name = self.string("tensor name")?;
        let bad = |detail: String| EngineError::corrupt("tensor info", format!("`{name}`: {detail}"));
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions (at most {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let dim = self.u64("tensor dimension")?;
            // ggml stores dimensions as i64.
            if dim > i64::MAX as u64 {
                return Err(bad(format!("dimension {dim} out of range")));
            }
            dims.push(dim);
        }
        let ty = GgmlType::from_id(self.u32("tensor type")?)?;
        let offset = self.u64("tensor data offset")?;
        if offset % alignment != 0 {
            return Err(bad(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        let tensor = GgufTensorInfo { name, dims, ty, offset };
        tensor.n_bytes()?;
        Ok(tensor)
    }
}

/// The bytes behind a `GgufFile` or `SafetensorsFile`: a memory map, a `Vec`, an `Arc<[u8]>`…
pub(crate) type FileBuffer = Box<dyn AsRef<[u8]> + Send + Sync>;

/// Opens a file as a read-only memory map.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn map_file(path: &std::path::Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is read-only and private to this process. Another process truncating or
    // rewriting the model file while it is mapped is outside what any mmap reader can defend
    // against; every access is still bounds-checked against the length seen at open.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(map)
}

/// A whole GGUF file in memory (or mapped): the parsed header plus access to each tensor's bytes.
pub struct GgufFile {
    header: GgufHeader,
    buffer: FileBuffer,
    tensors: Vec<TensorMeta>,
    /// Byte range of each tensor's data within `buffer`, parallel to `tensors`.
    ranges: Vec<std::ops::Range<usize>>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.bytes().len())
            .field("version", &self.header.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_buffer(map_file(path.as_ref())?)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_buffer(bytes)
    }

    /// From any owned byte buffer: `Vec<u8>`, `Arc<[u8]>`, `Box<[u8]>`, a memory map…
    pub fn from_buffer<B: AsRef<[u8]> + Send + Sync + 'static>(buffer: B) -> Result<Self> {
        let buffer: FileBuffer = Box::new(buffer);
        let bytes = (*buffer).as_ref();
        let header = GgufHeader::parse(bytes)?;
        header.validate_against_len(bytes.len() as u64)?;
        let mut tensors = Vec::with_capacity(header.tensors.len());
        let mut ranges = Vec::with_capacity(header.tensors.len());
        let mut index = HashMap::with_capacity(header.tensors.len());
        for (i, info) in header.tensors.iter().enumerate() {
            let too_big = || EngineError::corrupt("tensor info", format!("`{}` is too large for this platform", info.name));
            let range = header.tensor_range(info)?;
            let start = usize::try_from(range.start).map_err(|_| too_big())?;
            let end = usize::try_from(range.end).map_err(|_| too_big())?;
            // Shape products (in any order) must not overflow usize on 32-bit targets either.
            info.dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d.max(1)).ok()?))
                .ok_or_else(too_big)?;
            let shape = info
                .shape()
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| too_big()))
                .collect::<Result<Vec<_>>>()?;
            tensors.push(TensorMeta { name: info.name.clone(), ty: info.ty, shape });
            ranges.push(start..end);
            index.insert(info.name.clone(), i);
        }
        Ok(Self { header, buffer, tensors, ranges, index })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        (*self.buffer).as_ref()
    }
}

impl WeightSource for GgufFile {
    fn format(&self) -> SourceFormat {
        SourceFormat::Gguf
    }

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    fn tensor_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let missing = || EngineError::MissingTensor(name.to_string());
        let &i = self.index.get(name).ok_or_else(missing)?;
        let (meta, range) = self.tensors.get(i).zip(self.ranges.get(i)).ok_or_else(missing)?;
        let expected = meta.ty.row_bytes(meta.n_elements())?;
        let bytes = self.bytes().get(range.clone()).filter(|b| b.len() == expected).ok_or_else(|| {
            EngineError::BadTensor { name: name.to_string(), detail: format!("data range {range:?} is not {expected} bytes in the file") }
        })?;
        Ok(Cow::Borrowed(bytes))
    }
}
