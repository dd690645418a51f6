//! Import of a GGUF file the user picked on the options page. The file is stored chunked in the
//! model store exactly like a download, its sha256 computed while it is stored, and it is then
//! validated through the path a load takes (GGUF header, every tensor inside the file, a supported
//! architecture, tokenizer and chat template) before the model is marked ready. A rejected file
//! leaves nothing behind.

use engine::chat::ChatTemplate;
use engine::config::ModelConfig;
use engine::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::download::{hex, DownloadCancel, Progress};
use crate::error::{ExtensionError, Result};
use crate::protocol::{FileManifest, ModelManifest, ModelState};
use crate::store::{storage_estimate, ModelStore, StoredGguf, CHUNK_BYTES};

/// Bytes `start..end` of `file`.
async fn read_slice(file: &web_sys::Blob, start: u64, end: u64) -> Result<Vec<u8>> {
    let slice = file.slice_with_f64_and_f64(start as f64, end as f64).map_err(ExtensionError::browser)?;
    let buffer = JsFuture::from(slice.array_buffer()).await.map_err(ExtensionError::browser)?;
    let buffer: js_sys::ArrayBuffer = buffer.dyn_into().map_err(ExtensionError::browser)?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Stores `file` (named `name`) as model `model`, replacing an earlier import of the same name,
/// and returns its manifest, `Ready` only when it validated.
pub async fn import_file(
    store: &ModelStore,
    file: &web_sys::Blob,
    model: &str,
    name: &str,
    cancel: &DownloadCancel,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ModelManifest> {
    let reject = |reason: String| ExtensionError::ImportRejected { file: name.to_string(), reason };
    let size = file.size() as u64;
    // Cheap checks first: nothing is stored for a file that is not GGUF at all.
    let magic = read_slice(file, 0, size.min(4)).await?;
    if magic != b"GGUF" {
        return Err(reject(format!("it is not a GGUF file (it starts with {magic:02x?}, not \"GGUF\")")));
    }
    let (usage, quota) = storage_estimate().await.unwrap_or((0, 0));
    if quota > 0 && size > quota.saturating_sub(usage) {
        return Err(ExtensionError::QuotaExceeded { needed: size, available: quota.saturating_sub(usage) });
    }
    if store.manifest(model).await?.is_some() {
        store.delete(model).await?;
    }
    let result = store_and_verify(store, file, model, name, size, cancel, progress).await;
    if result.is_err() {
        // Whatever part was stored goes: a rejected or failed import is never left half there.
        let _ = store.delete(model).await;
    }
    result
}

async fn store_and_verify(
    store: &ModelStore,
    file: &web_sys::Blob,
    model: &str,
    name: &str,
    size: u64,
    cancel: &DownloadCancel,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ModelManifest> {
    let mut manifest = ModelManifest {
        id: model.to_string(),
        files: vec![FileManifest { name: name.to_string(), size, sha256: None, chunks: Vec::new(), verified: false }],
        state: ModelState::Downloading,
    };
    store.put_manifest(&manifest).await?;
    let started = js_sys::Date::now();
    let mut hasher = Sha256::new();
    let mut at = 0u64;
    while at < size {
        if cancel.is_cancelled() {
            return Err(ExtensionError::Cancelled);
        }
        let end = (at + CHUNK_BYTES as u64).min(size);
        let bytes = read_slice(file, at, end).await?;
        hasher.update(&bytes);
        store.append_chunk(&mut manifest, 0, &bytes).await?;
        at = end;
        let seconds = ((js_sys::Date::now() - started) / 1000.0).max(1e-3);
        let rate = at as f64 / seconds;
        progress(Progress { file: name, done: at, total: size, rate, eta_s: (size - at) as f64 / rate.max(1.0) });
    }
    let sha256 = hex(&hasher.finalize());
    {
        let file = &mut manifest.files[0];
        file.sha256 = Some(sha256);
        file.verified = true;
    }
    validate(store, &manifest).await.map_err(|e| ExtensionError::ImportRejected { file: name.to_string(), reason: e.to_string() })?;
    manifest.state = ModelState::Ready;
    store.put_manifest(&manifest).await?;
    Ok(manifest)
}

/// What a load would check before any weight is read: the header parses, every tensor lies
/// inside the stored file (a truncated copy fails here), and the model is one the engine runs.
async fn validate(store: &ModelStore, manifest: &ModelManifest) -> Result<()> {
    let source = StoredGguf::open(store, manifest).await?;
    let header = source.header();
    ModelConfig::from_gguf(header)?;
    Tokenizer::from_gguf(header)?;
    ChatTemplate::from_gguf(header)?;
    Ok(())
}
