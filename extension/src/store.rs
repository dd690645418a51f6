//! The model store: the extension's IndexedDB (`idb` crate), one manifest record per model and
//! the files as chunk records of at most [`CHUNK_BYTES`], plus [`StoredGguf`], the engine's
//! asynchronous weight source over those chunks (a model loads tensor by tensor; the wasm heap
//! never holds a whole file).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use engine::gguf::GgufHeader;
use engine::weights::{AsyncWeightSource, SourceFormat, TensorBytesFuture, TensorMeta};
use idb::{Database, Factory, KeyRange, ObjectStoreParams, TransactionMode};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::chrome::{from_js, to_js};
use crate::error::{ExtensionError, Result};
use crate::protocol::{FileManifest, ModelManifest};

/// Chunk record size: large enough for few IndexedDB round trips, small enough to stream.
pub const CHUNK_BYTES: usize = 8 << 20;

const DB_NAME: &str = "qwglm-models";
const DB_VERSION: u32 = 1;
const MANIFESTS: &str = "manifests";
const CHUNKS: &str = "chunks";

/// Key of chunk `index` of `file` of `model`; zero-padded so keys sort in file order.
fn chunk_key(model: &str, file: &str, index: usize) -> String {
    format!("{model}\u{1}{file}\u{1}{index:08}")
}

/// All chunk keys of `file` of `model` (or of every file of `model` when `file` is `None`).
fn chunk_range(model: &str, file: Option<&str>) -> Result<KeyRange> {
    let prefix = match file {
        Some(f) => format!("{model}\u{1}{f}\u{1}"),
        None => format!("{model}\u{1}"),
    };
    let upper = format!("{prefix}\u{2}");
    Ok(KeyRange::bound(&prefix.into(), &upper.into(), None, None)?)
}

pub struct ModelStore {
    db: Database,
}

impl ModelStore {
    pub async fn open() -> Result<Self> {
        let factory = Factory::new()?;
        let mut request = factory.open(DB_NAME, Some(DB_VERSION))?;
        request.on_upgrade_needed(|event| {
            use idb::event::DatabaseEvent;
            let Ok(db) = event.database() else { return };
            let names = db.store_names();
            for name in [MANIFESTS, CHUNKS] {
                if !names.iter().any(|n| n == name) {
                    let _ = db.create_object_store(name, ObjectStoreParams::new());
                }
            }
        });
        Ok(Self { db: request.await? })
    }

    pub async fn manifest(&self, model: &str) -> Result<Option<ModelManifest>> {
        let tx = self.db.transaction(&[MANIFESTS], TransactionMode::ReadOnly)?;
        let value = tx.object_store(MANIFESTS)?.get(JsValue::from_str(model))?.await?;
        match value {
            Some(v) => Ok(Some(from_js(v).map_err(ExtensionError::browser)?)),
            None => Ok(None),
        }
    }

    pub async fn manifests(&self) -> Result<Vec<ModelManifest>> {
        let tx = self.db.transaction(&[MANIFESTS], TransactionMode::ReadOnly)?;
        let values = tx.object_store(MANIFESTS)?.get_all(None, None)?.await?;
        values.into_iter().map(|v| from_js(v).map_err(ExtensionError::browser)).collect()
    }

    pub async fn put_manifest(&self, manifest: &ModelManifest) -> Result<()> {
        let tx = self.db.transaction(&[MANIFESTS], TransactionMode::ReadWrite)?;
        let value = to_js(manifest).map_err(ExtensionError::browser)?;
        tx.object_store(MANIFESTS)?.put(&value, Some(&JsValue::from_str(&manifest.id)))?.await?;
        commit(tx).await
    }

    /// Appends a chunk to file `file_index` of `manifest` and stores both in one transaction, so
    /// the manifest never lists a chunk that is not stored (nor the reverse, once committed).
    pub async fn append_chunk(&self, manifest: &mut ModelManifest, file_index: usize, bytes: &[u8]) -> Result<()> {
        let file = manifest.files.get_mut(file_index).ok_or_else(|| ExtensionError::Store("no such file".into()))?;
        let key = chunk_key(&manifest.id, &file.name, file.chunks.len());
        file.chunks.push(bytes.len() as u32);
        let outcome = async {
            let tx = self.db.transaction(&[MANIFESTS, CHUNKS], TransactionMode::ReadWrite)?;
            let data = js_sys::Uint8Array::from(bytes);
            tx.object_store(CHUNKS)?.put(&data, Some(&JsValue::from_str(&key)))?.await?;
            let value = to_js(&*manifest).map_err(ExtensionError::browser)?;
            tx.object_store(MANIFESTS)?.put(&value, Some(&JsValue::from_str(&manifest.id)))?.await?;
            commit(tx).await
        }
        .await;
        if outcome.is_err() {
            if let Some(file) = manifest.files.get_mut(file_index) {
                file.chunks.pop();
            }
        }
        outcome
    }

    pub async fn chunk(&self, model: &str, file: &str, index: usize) -> Result<js_sys::Uint8Array> {
        let tx = self.db.transaction(&[CHUNKS], TransactionMode::ReadOnly)?;
        let value = tx.object_store(CHUNKS)?.get(JsValue::from_str(&chunk_key(model, file, index)))?.await?;
        value
            .and_then(|v| v.dyn_into::<js_sys::Uint8Array>().ok())
            .ok_or_else(|| ExtensionError::Store(format!("chunk {index} of {file} is missing")))
    }

    /// Drops the stored bytes of one file (a hash mismatch) and records it as empty.
    pub async fn reset_file(&self, manifest: &mut ModelManifest, file_index: usize) -> Result<()> {
        let file = manifest.files.get_mut(file_index).ok_or_else(|| ExtensionError::Store("no such file".into()))?;
        file.chunks.clear();
        file.verified = false;
        let range = chunk_range(&manifest.id, Some(&file.name))?;
        let tx = self.db.transaction(&[MANIFESTS, CHUNKS], TransactionMode::ReadWrite)?;
        tx.object_store(CHUNKS)?.delete(range)?.await?;
        let value = to_js(&*manifest).map_err(ExtensionError::browser)?;
        tx.object_store(MANIFESTS)?.put(&value, Some(&JsValue::from_str(&manifest.id)))?.await?;
        commit(tx).await
    }

    pub async fn delete(&self, model: &str) -> Result<()> {
        let tx = self.db.transaction(&[MANIFESTS, CHUNKS], TransactionMode::ReadWrite)?;
        tx.object_store(CHUNKS)?.delete(chunk_range(model, None)?)?.await?;
        tx.object_store(MANIFESTS)?.delete(JsValue::from_str(model))?.await?;
        commit(tx).await
    }
}

async fn commit(tx: idb::Transaction) -> Result<()> {
    let result = tx.commit()?.await?;
    if result.is_committed() {
        Ok(())
    } else {
        Err(ExtensionError::Store("transaction aborted".into()))
    }
}

/// `navigator.storage.estimate()`: (usage, quota) in bytes.
pub async fn storage_estimate() -> Result<(u64, u64)> {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).map_err(ExtensionError::browser)?;
    let storage = js_sys::Reflect::get(&navigator, &"storage".into()).map_err(ExtensionError::browser)?;
    let estimate: js_sys::Function =
        js_sys::Reflect::get(&storage, &"estimate".into()).map_err(ExtensionError::browser)?.dyn_into().map_err(ExtensionError::browser)?;
    let promise: js_sys::Promise = estimate.call0(&storage).map_err(ExtensionError::browser)?.dyn_into().map_err(ExtensionError::browser)?;
    let value = JsFuture::from(promise).await.map_err(ExtensionError::browser)?;
    let field = |name: &str| js_sys::Reflect::get(&value, &name.into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u64;
    Ok((field("usage"), field("quota")))
}

/// A GGUF file of a ready model, read from its chunks: the header is parsed from the first
/// chunks; each tensor is read from the chunks covering it when the loader asks for it.
pub struct StoredGguf<'s> {
    store: &'s ModelStore,
    model: String,
    file: String,
    /// Start offset of each chunk in the file, plus the file length at the end.
    offsets: Vec<u64>,
    header: GgufHeader,
    tensors: Vec<TensorMeta>,
    ranges: HashMap<String, std::ops::Range<u64>>,
    /// The last chunk read: consecutive small tensors share chunks.
    cached: RefCell<Option<(usize, js_sys::Uint8Array)>>,
}

impl<'s> StoredGguf<'s> {
    pub async fn open(store: &'s ModelStore, manifest: &ModelManifest) -> Result<Self> {
        let file: &FileManifest = manifest.files.first().ok_or_else(|| ExtensionError::Store("model has no files".into()))?;
        let mut offsets = Vec::with_capacity(file.chunks.len() + 1);
        let mut at = 0u64;
        for &len in &file.chunks {
            offsets.push(at);
            at += u64::from(len);
        }
        offsets.push(at);
        if at != file.size {
            return Err(ExtensionError::Store(format!("{} has {at} of {} bytes stored", file.name, file.size)));
        }
        // The header (metadata + tensor infos) of these models is a few MB: grow the prefix a
        // chunk at a time until it parses.
        let mut prefix = Vec::new();
        let mut header = None;
        let mut last_error = None;
        for index in 0..file.chunks.len() {
            let chunk = store.chunk(&manifest.id, &file.name, index).await?;
            prefix.extend_from_slice(&chunk.to_vec());
            match GgufHeader::parse_prefix(&prefix, file.size) {
                Ok(h) => {
                    header = Some(h);
                    break;
                }
                Err(e @ engine::EngineError::Truncated { .. }) => last_error = Some(e),
                Err(e) => return Err(e.into()),
            }
            // A header needing more than 64 MiB is not one of ours.
            if prefix.len() > 64 << 20 {
                break;
            }
        }
        drop(prefix);
        let header = match (header, last_error) {
            (Some(h), _) => h,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => return Err(ExtensionError::Store("empty file".into())),
        };
        header.validate_against_len(file.size)?;
        let mut tensors = Vec::with_capacity(header.tensors.len());
        let mut ranges = HashMap::with_capacity(header.tensors.len());
        for info in &header.tensors {
            let shape = info.shape().into_iter().map(|d| d as usize).collect();
            tensors.push(TensorMeta { name: info.name.clone(), ty: info.ty, shape });
            ranges.insert(info.name.clone(), header.tensor_range(info)?);
        }
        Ok(Self {
            store,
            model: manifest.id.clone(),
            file: file.name.clone(),
            offsets,
            header,
            tensors,
            ranges,
            cached: RefCell::new(None),
        })
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    async fn chunk(&self, index: usize) -> Result<js_sys::Uint8Array> {
        if let Some((i, data)) = &*self.cached.borrow() {
            if *i == index {
                return Ok(data.clone());
            }
        }
        let data = self.store.chunk(&self.model, &self.file, index).await?;
        *self.cached.borrow_mut() = Some((index, data.clone()));
        Ok(data)
    }

    async fn read(&self, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        let len = usize::try_from(range.end - range.start).map_err(|_| ExtensionError::Store("tensor too large".into()))?;
        let mut out = Vec::with_capacity(len);
        // First chunk whose end is past range.start.
        let mut index = self.offsets.partition_point(|&o| o <= range.start).saturating_sub(1);
        while (out.len() as u64) < range.end - range.start {
            let (start, end) = (self.offsets[index], self.offsets[index + 1]);
            let chunk = self.chunk(index).await?;
            if chunk.length() as u64 != end - start {
                return Err(ExtensionError::Store(format!("chunk {index} of {} has the wrong length", self.file)));
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.extend_from_slice(&chunk.subarray(from as u32, to as u32).to_vec());
            index += 1;
        }
        Ok(out)
    }
}

impl AsyncWeightSource for StoredGguf<'_> {
    fn format(&self) -> SourceFormat {
        SourceFormat::Gguf
    }
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }
    fn tensor_bytes<'a>(&'a self, name: &str) -> TensorBytesFuture<'a> {
        let range = self.ranges.get(name).cloned();
        let name = name.to_string();
        Box::pin(async move {
            let range = range.ok_or_else(|| engine::EngineError::MissingTensor(name.clone()))?;
            let bytes = self.read(range).await.map_err(|e| engine::EngineError::BadTensor { name, detail: e.to_string() })?;
            Ok(Cow::Owned(bytes))
        })
    }
}
