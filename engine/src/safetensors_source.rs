//! `WeightSource` over Hugging Face safetensors checkpoints: one file (`model.safetensors`) or a
//! sharded set (`model.safetensors.index.json` + `model-0000N-of-0000M.safetensors`).
//!
//! The `safetensors` crate parses and validates the header (JSON, dtypes, contiguous offsets that
//! cover the data exactly); this module maps dtypes to `GgmlType`, re-checks each tensor's byte
//! length against its shape, and hands out borrowed slices.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{EngineError, Result};
use crate::gguf::FileBuffer;
use crate::quant::GgmlType;
use crate::weights::{SourceFormat, TensorMeta, WeightSource};

/// The engine type for a safetensors dtype, if there is one. F32/F16/BF16 are usable; the integer
/// and f64 types are listed (as unsupported `GgmlType`s, so they fail at dequantization); the rest
/// (bool, u8, fp8, …) are left out of `tensors()` and `tensor_bytes` refuses them.
fn ggml_type(dtype: Dtype) -> Option<GgmlType> {
    Some(match dtype {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        Dtype::I8 => GgmlType::I8,
        Dtype::I16 => GgmlType::I16,
        Dtype::I32 => GgmlType::I32,
        Dtype::I64 => GgmlType::I64,
        Dtype::F64 => GgmlType::F64,
        _ => return None,
    })
}

fn safetensors_error(e: safetensors::SafeTensorError) -> EngineError {
    EngineError::Safetensors(e.to_string())
}

/// One safetensors file in memory (or mapped).
pub struct SafetensorsFile {
    buffer: FileBuffer,
    tensors: Vec<TensorMeta>,
    /// Absolute byte range of each tensor in `buffer`, parallel to `tensors`.
    ranges: Vec<Range<usize>>,
    index: HashMap<String, usize>,
    /// Tensors whose dtype has no engine type (bool, u8, fp8…): name → dtype, for the error.
    unrepresentable: HashMap<String, String>,
    metadata: Option<HashMap<String, String>>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("len", &self.bytes().len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_buffer(crate::gguf::map_file(path.as_ref())?)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_buffer(bytes)
    }

    /// From any owned byte buffer: `Vec<u8>`, `Arc<[u8]>`, `Box<[u8]>`, a memory map…
    pub fn from_buffer<B: AsRef<[u8]> + Send + Sync + 'static>(buffer: B) -> Result<Self> {
        let buffer: FileBuffer = Box::new(buffer);
        let bytes = (*buffer).as_ref();
        let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(safetensors_error)?;
        // The 8-byte length prefix, then the JSON header, then the data.
        let data_start = header_len
            .checked_add(8)
            .ok_or_else(|| EngineError::Safetensors("header length overflows".into()))?;

        // `offset_keys` is in data order, i.e. file order.
        let names = metadata.offset_keys();
        let mut tensors = Vec::with_capacity(names.len());
        let mut ranges = Vec::with_capacity(names.len());
        let mut index = HashMap::with_capacity(names.len());
        let mut unrepresentable = HashMap::new();
        for name in names {
            let Some(info) = metadata.info(&name) else {
                return Err(EngineError::Safetensors(format!("tensor `{name}` vanished from the header")));
            };
            let bad = |detail: String| EngineError::BadTensor { name: name.clone(), detail };
            let (start, end) = info.data_offsets;
            let range = data_start
                .checked_add(start)
                .zip(data_start.checked_add(end))
                .map(|(s, e)| s..e)
                .filter(|r| r.start <= r.end && r.end <= bytes.len())
                .ok_or_else(|| bad(format!("data offsets {start}..{end} outside the file")))?;
            let Some(ty) = ggml_type(info.dtype) else {
                unrepresentable.insert(name, format!("{:?}", info.dtype));
                continue;
            };
            let n_bytes = info
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n_elements| ty.row_bytes(n_elements).ok());
            if n_bytes != Some(range.len()) {
                return Err(bad(format!("{} bytes do not hold {:?} {}", range.len(), info.shape, ty)));
            }
            index.insert(name.clone(), tensors.len());
            tensors.push(TensorMeta { name, ty, shape: info.shape.clone() });
            ranges.push(range);
        }
        let metadata = metadata.metadata().clone();
        Ok(Self { buffer, tensors, ranges, index, unrepresentable, metadata })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        (*self.buffer).as_ref()
    }

    /// The free-form `__metadata__` map of the header, if any.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// Whether the file holds a tensor of this name, usable or not.
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.unrepresentable.contains_key(name)
    }
}

impl WeightSource for SafetensorsFile {
    fn format(&self) -> SourceFormat {
        SourceFormat::Safetensors
    }

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    fn tensor_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        if let Some(dtype) = self.unrepresentable.get(name) {
            return Err(EngineError::UnsupportedTensorType(format!("safetensors {dtype} (tensor `{name}`)")));
        }
        let missing = || EngineError::MissingTensor(name.to_string());
        let &i = self.index.get(name).ok_or_else(missing)?;
        let range = self.ranges.get(i).ok_or_else(missing)?;
        let bytes = self.bytes().get(range.clone()).ok_or_else(missing)?;
        Ok(Cow::Borrowed(bytes))
    }
}

/// The `weight_map` of a `model.safetensors.index.json`: tensor name → shard file name.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// A checkpoint split over several safetensors files, as listed by its index JSON.
pub struct ShardedSafetensors {
    shards: Vec<(String, SafetensorsFile)>,
    tensors: Vec<TensorMeta>,
    /// Tensor name → index of the shard that holds it.
    index: HashMap<String, usize>,
}

impl ShardedSafetensors {
    /// Opens `model.safetensors.index.json` and every shard it lists (relative to its directory).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(index_path: impl AsRef<std::path::Path>) -> Result<Self> {
        let index_path = index_path.as_ref();
        let json = std::fs::read(index_path)?;
        let dir = index_path.parent().unwrap_or_else(|| std::path::Path::new("."));
        Self::from_index(&json, |shard| SafetensorsFile::open(dir.join(shard)))
    }

    /// Builds the set from the index JSON, loading each distinct shard once with `load_shard`
    /// (which gets the shard's file name; from disk, IndexedDB, memory…).
    pub fn from_index(
        index_json: &[u8],
        mut load_shard: impl FnMut(&str) -> Result<SafetensorsFile>,
    ) -> Result<Self> {
        let index: ShardIndex = serde_json::from_slice(index_json)
            .map_err(|e| EngineError::Json { what: "safetensors index", detail: e.to_string() })?;
        let mut shard_names: Vec<&str> = index.weight_map.values().map(String::as_str).collect();
        shard_names.sort_unstable();
        shard_names.dedup();
        let mut shards = Vec::with_capacity(shard_names.len());
        for shard in shard_names {
            // Shard names come from a downloaded file: keep them inside the checkpoint directory.
            let escapes = shard.is_empty()
                || shard.starts_with('/')
                || shard.starts_with('\\')
                || shard.contains(':')
                || shard.split(['/', '\\']).any(|part| part == "..");
            if escapes {
                return Err(EngineError::Safetensors(format!("index names an unsafe shard path `{shard}`")));
            }
            let file = load_shard(shard)?;
            shards.push((shard.to_string(), file));
        }
        Self::from_shards(shards, &index.weight_map)
    }

    /// Checks the shards against the weight map and merges their tensor lists (shard order).
    fn from_shards(shards: Vec<(String, SafetensorsFile)>, weight_map: &BTreeMap<String, String>) -> Result<Self> {
        for (tensor, shard) in weight_map {
            let holds_it = shards.iter().any(|(name, file)| name == shard && file.contains(tensor));
            if !holds_it {
                return Err(EngineError::MissingTensor(format!("{tensor} (expected in shard {shard})")));
            }
        }
        let mut tensors = Vec::new();
        let mut index = HashMap::new();
        for (shard_index, (shard_name, file)) in shards.iter().enumerate() {
            for meta in file.tensors() {
                if index.insert(meta.name.clone(), shard_index).is_some() {
                    return Err(EngineError::Safetensors(format!(
                        "tensor `{}` appears in more than one shard (again in {shard_name})",
                        meta.name
                    )));
                }
                tensors.push(meta.clone());
            }
        }
        Ok(Self { shards, tensors, index })
    }

    /// Shard file names, in load order.
    pub fn shard_names(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().map(|(name, _)| name.as_str())
    }

    fn shard_of(&self, name: &str) -> Option<&SafetensorsFile> {
        // A tensor the engine cannot represent is in no shard's `tensors()`, but its shard should
        // still answer (with UnsupportedTensorType), so fall back to asking each shard.
        match self.index.get(name) {
            Some(&i) => self.shards.get(i).map(|(_, file)| file),
            None => self.shards.iter().map(|(_, file)| file).find(|file| file.contains(name)),
        }
    }
}

impl WeightSource for ShardedSafetensors {
    fn format(&self) -> SourceFormat {
        SourceFormat::Safetensors
    }

    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.shard_of(name).and_then(|file| file.tensor(name))
    }

    fn tensor_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        match self.shard_of(name) {
            Some(file) => file.tensor_bytes(name),
            None => Err(EngineError::MissingTensor(name.to_string())),
        }
    }
}
