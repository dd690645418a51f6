//! The verified, resumable downloader: fetches a model file from hosts in Hub layout (the first
//! host, then the mirrors) into the store, chunk by chunk. Every received byte is committed to
//! IndexedDB (a dropped connection keeps what arrived) and a resume asks only for the bytes after
//! the stored ones (HTTP Range). Failures retry with exponential backoff and jitter; a stalled
//! response is aborted. The file is marked verified, and the model ready, only when its sha256
//! matches; a mismatch drops the file's chunks and fetches it again.

use std::cell::Cell;
use std::rc::Rc;

use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::chrome::js_error_text;
use crate::error::{ExtensionError, Result};
use crate::protocol::{FileManifest, ModelManifest, ModelState};
use crate::store::{storage_estimate, ModelStore, CHUNK_BYTES};

/// No bytes for this long: the response is abandoned and the download resumed.
const STALL_MS: i32 = 8_000;
/// Backoff before retry n (from 0): `BASE_MS * 2^n`, at most `MAX_MS`, times a jitter in [0.5, 1.5).
const BACKOFF_BASE_MS: f64 = 250.0;
const BACKOFF_MAX_MS: f64 = 8_000.0;
/// Consecutive failures without a single new byte before giving up.
const MAX_FAILURES: u32 = 8;
/// Full fetches of a file whose hash did not match before giving up.
const MAX_HASH_FAILURES: u32 = 3;

/// Shared stop flag of one download.
#[derive(Clone, Default)]
pub struct DownloadCancel(Rc<Cell<bool>>);

impl DownloadCancel {
    pub fn cancel(&self) {
        self.0.set(true);
    }
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.get()
    }
}

pub struct Progress<'a> {
    pub file: &'a str,
    pub done: u64,
    pub total: u64,
    pub rate: f64,
    pub eta_s: f64,
}

/// What to fetch: one file of a model, its URLs on each configured host (Hub layout
/// `{host}/{repo}/resolve/{rev}/{file}`, tried in order) and the expected hash, if the catalog
/// pins one.
pub struct FileSpec<'a> {
    pub model: &'a str,
    pub file: &'a str,
    pub urls: &'a [String],
    pub sha256: Option<&'a str>,
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

pub(crate) async fn sleep_ms(ms: f64) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) = js_sys::Reflect::get(&global, &"setTimeout".into()).and_then(|f| f.dyn_into::<js_sys::Function>()) {
            let _ = set_timeout.call2(&global, &resolve, &JsValue::from_f64(ms));
        } else {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = JsFuture::from(promise).await;
}

fn backoff_ms(failures: u32) -> f64 {
    let base = (BACKOFF_BASE_MS * 2f64.powi(failures.min(16) as i32)).min(BACKOFF_MAX_MS);
    base * (0.5 + js_sys::Math::random())
}

/// Downloads (or resumes) `spec` into the store and returns the model's manifest, `Ready` once
/// the file is verified.
pub async fn download(
    store: &ModelStore,
    spec: &FileSpec<'_>,
    cancel: &DownloadCancel,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ModelManifest> {
    if spec.urls.is_empty() {
        return Err(ExtensionError::Download { url: spec.file.to_string(), reason: "no download host is configured".into() });
    }
    let mut manifest = match store.manifest(spec.model).await? {
        Some(m) => m,
        None => ModelManifest {
            id: spec.model.to_string(),
            files: vec![FileManifest { name: spec.file.to_string(), size: 0, sha256: spec.sha256.map(str::to_string), chunks: Vec::new(), verified: false }],
            state: ModelState::Downloading,
        },
    };
    if manifest.state == ModelState::Ready && manifest.files.iter().all(|f| f.verified) {
        return Ok(manifest);
    }
    let file_index = manifest.files.iter().position(|f| f.name == spec.file).ok_or_else(|| ExtensionError::Store(format!("{} is not a file of {}", spec.file, spec.model)))?;
    if manifest.files[file_index].sha256.is_none() {
        manifest.files[file_index].sha256 = spec.sha256.map(str::to_string);
    }

    // What is stored already counts towards the hash: read it back (locally, not fetched again).
    let mut hasher = Sha256::new();
    for index in 0..manifest.files[file_index].chunks.len() {
        hasher.update(store.chunk(spec.model, spec.file, index).await?.to_vec());
    }

    let session_start = now_ms();
    let session_first = manifest.files[file_index].stored();
    let mut failures = 0u32;
    let mut hash_failures = 0u32;
    let mut host = 0usize;
    let mut last_report = 0f64;
    loop {
        if cancel.is_cancelled() {
            return Err(ExtensionError::Cancelled);
        }
        let file = &manifest.files[file_index];
        let stored = file.stored();
        if file.size > 0 && stored == file.size {
            // Complete: verify before anything may call it ready.
            let expected = file.sha256.clone().ok_or_else(|| ExtensionError::NoExpectedHash { file: file.name.clone() })?;
            let found = hex(&std::mem::take(&mut hasher).finalize());
            if found == expected {
                manifest.files[file_index].verified = true;
                if manifest.files.iter().all(|f| f.verified) {
                    manifest.state = ModelState::Ready;
                }
                store.put_manifest(&manifest).await?;
                return Ok(manifest);
            }
            hash_failures += 1;
            web_sys::console::warn_1(&format!("qwglm: {} sha256 {found}, expected {expected}: fetching it again", spec.file).into());
            store.reset_file(&mut manifest, file_index).await?;
            if hash_failures >= MAX_HASH_FAILURES {
                return Err(ExtensionError::HashMismatch { file: spec.file.to_string(), expected, found });
            }
            continue;
        }
        if file.size > 0 {
            check_quota(file.size - stored).await?;
        }

        let url = spec.urls[host % spec.urls.len()].clone();
        let before = stored;
        let outcome = fetch_into(store, &mut manifest, file_index, &url, &mut hasher, cancel, &mut |m: &ModelManifest| {
            let f = &m.files[file_index];
            let t = now_ms();
            if t - last_report < 200.0 && f.stored() != f.size {
                return;
            }
            last_report = t;
            let done = f.stored();
            let rate = (done.saturating_sub(session_first)) as f64 / ((t - session_start).max(1.0) / 1000.0);
            let eta_s = if rate > 0.0 && f.size > done { (f.size - done) as f64 / rate } else { 0.0 };
            progress(Progress { file: &f.name, done, total: f.size, rate, eta_s });
        })
        .await;
        let progressed = manifest.files[file_index].stored() > before;
        match outcome {
            Ok(()) => failures = 0,
            Err(e @ (ExtensionError::Cancelled | ExtensionError::QuotaExceeded { .. } | ExtensionError::Store(_))) => return Err(e),
            Err(e) => {
                if progressed {
                    failures = 0;
                } else {
                    failures += 1;
                    // A host that keeps failing: move on to the next (mirror).
                    if failures.is_multiple_of(2) {
                        host += 1;
                    }
                }
                web_sys::console::warn_1(&format!("qwglm: download of {url}: {e} (retry {failures})").into());
                if failures >= MAX_FAILURES {
                    return Err(e);
                }
                sleep_ms(backoff_ms(failures)).await;
            }
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn check_quota(needed: u64) -> Result<()> {
    let (usage, quota) = storage_estimate().await?;
    let available = quota.saturating_sub(usage);
    if quota > 0 && available < needed {
        return Err(ExtensionError::QuotaExceeded { needed, available });
    }
    Ok(())
}

/// The Hub's LFS hash of the file (`X-Linked-Etag`, else an `ETag` that is a sha256).
fn hub_sha256(headers: &web_sys::Headers) -> Option<String> {
    ["x-linked-etag", "etag"].iter().find_map(|name| {
        let value = headers.get(name).ok().flatten()?;
        let value = value.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
        (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
    })
}

/// One request: from the first byte not stored to the end (or until it fails), committing
/// chunks as they fill and whatever arrived when it stops.
async fn fetch_into(
    store: &ModelStore,
    manifest: &mut ModelManifest,
    file_index: usize,
    url: &str,
    hasher: &mut Sha256,
    cancel: &DownloadCancel,
    report: &mut dyn FnMut(&ModelManifest),
) -> Result<()> {
    let failed = |reason: String| ExtensionError::Download { url: url.to_string(), reason };
    let start = manifest.files[file_index].stored();
    let controller = web_sys::AbortController::new().map_err(ExtensionError::browser)?;
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(&controller.signal()));
    init.set_cache(web_sys::RequestCache::NoStore);
    let headers = web_sys::Headers::new().map_err(ExtensionError::browser)?;
    if start > 0 {
        headers.set("Range", &format!("bytes={start}-")).map_err(ExtensionError::browser)?;
    }
    init.set_headers(&headers);
    let global = js_sys::global();
    let fetch: js_sys::Function =
        js_sys::Reflect::get(&global, &"fetch".into()).map_err(ExtensionError::browser)?.dyn_into().map_err(ExtensionError::browser)?;
    let promise: js_sys::Promise =
        fetch.call2(&global, &JsValue::from_str(url), &init).map_err(|e| failed(js_error_text(&e)))?.unchecked_into();
    let response: web_sys::Response = with_timeout(promise, STALL_MS).await.map_err(|e| {
        controller.abort();
        failed(e)
    })?.unchecked_into();

    let status = response.status();
    let total = match (status, start) {
        (200, 0) => response.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok()),
        (206, _) => {
            // Content-Range: bytes START-END/TOTAL; the start must be ours.
            let range = response.headers().get("content-range").ok().flatten().unwrap_or_default();
            let (span, total) = range.trim_start_matches("bytes ").split_once('/').unwrap_or(("", ""));
            let first = span.split('-').next().and_then(|v| v.parse::<u64>().ok());
            if first != Some(start) {
                controller.abort();
                return Err(failed(format!("asked for bytes from {start}, got range {range:?}")));
            }
            total.parse::<u64>().ok()
        }
        (200, _) => {
            controller.abort();
            return Err(failed("the server ignored the Range request".into()));
        }
        _ => {
            controller.abort();
            return Err(failed(format!("HTTP {} {}", status, response.status_text())));
        }
    };
    let file = &mut manifest.files[file_index];
    match (file.size, total) {
        (0, Some(t)) => file.size = t,
        (s, Some(t)) if s != t => {
            controller.abort();
            return Err(ExtensionError::Store(format!("{} changed size on the server ({s} → {t} bytes)", file.name)));
        }
        (0, None) => {
            controller.abort();
            return Err(failed("no content length".into()));
        }
        _ => {}
    }
    if file.sha256.is_none() {
        file.sha256 = hub_sha256(&response.headers());
        if file.sha256.is_none() {
            controller.abort();
            return Err(ExtensionError::NoExpectedHash { file: file.name.clone() });
        }
    }
    check_quota(file.size - start).await.inspect_err(|_| controller.abort())?;

    let body = response.body().ok_or_else(|| failed("empty body".into()))?;
    let reader: JsValue = js_sys::Reflect::get(&body, &"getReader".into())
        .and_then(|f| f.dyn_into::<js_sys::Function>())
        .and_then(|f| f.call0(&body))
        .map_err(|e| failed(js_error_text(&e)))?;
    let read: js_sys::Function =
        js_sys::Reflect::get(&reader, &"read".into()).map_err(ExtensionError::browser)?.dyn_into().map_err(ExtensionError::browser)?;

    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let outcome: Result<()> = async {
        loop {
            if cancel.is_cancelled() {
                return Err(ExtensionError::Cancelled);
            }
            let promise: js_sys::Promise = read.call0(&reader).map_err(|e| failed(js_error_text(&e)))?.unchecked_into();
            let chunk = with_timeout(promise, STALL_MS).await.map_err(failed)?;
            let done = js_sys::Reflect::get(&chunk, &"done".into()).ok().and_then(|v| v.as_bool()).unwrap_or(true);
            if done {
                return Ok(());
            }
            let value: js_sys::Uint8Array =
                js_sys::Reflect::get(&chunk, &"value".into()).map_err(ExtensionError::browser)?.unchecked_into();
            let size = manifest.files[file_index].size;
            let have = manifest.files[file_index].stored() + buffer.len() as u64;
            if have + u64::from(value.length()) > size {
                return Err(failed(format!("the server sent more than the {size} bytes of the file")));
            }
            let mut incoming = value.to_vec();
            while !incoming.is_empty() {
                let take = (CHUNK_BYTES - buffer.len()).min(incoming.len());
                buffer.extend(incoming.drain(..take));
                if buffer.len() == CHUNK_BYTES {
                    commit(store, manifest, file_index, hasher, &mut buffer).await?;
                    report(manifest);
                }
            }
        }
    }
    .await;
    if outcome.is_err() {
        controller.abort();
    }
    // Whatever arrived is kept (also after a failure): a resume never asks for it again.
    if !buffer.is_empty() {
        commit(store, manifest, file_index, hasher, &mut buffer).await?;
    }
    report(manifest);
    outcome?;
    let file = &manifest.files[file_index];
    if file.stored() != file.size {
        return Err(failed(format!("the response ended after {} of {} bytes", file.stored(), file.size)));
    }
    Ok(())
}

async fn commit(store: &ModelStore, manifest: &mut ModelManifest, file_index: usize, hasher: &mut Sha256, buffer: &mut Vec<u8>) -> Result<()> {
    check_quota(buffer.len() as u64).await?;
    store.append_chunk(manifest, file_index, buffer).await?;
    hasher.update(&buffer[..]);
    buffer.clear();
    Ok(())
}

/// Awaits `promise`, failing with a stall error if it does not settle within `ms`.
async fn with_timeout(promise: js_sys::Promise, ms: i32) -> std::result::Result<JsValue, String> {
    let marker = JsValue::from_str("qwglm-stalled");
    let timer_marker = marker.clone();
    let timer = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) = js_sys::Reflect::get(&global, &"setTimeout".into()).and_then(|f| f.dyn_into::<js_sys::Function>()) {
            let bound = resolve.bind1(&JsValue::NULL, &timer_marker);
            let _ = set_timeout.call2(&global, &bound, &JsValue::from(ms));
        }
    });
    let race = js_sys::Promise::race(&js_sys::Array::of2(&promise, &timer));
    match JsFuture::from(race).await {
        Ok(v) if v == marker => Err(format!("no data for {} s (stalled)", ms / 1000)),
        Ok(v) => Ok(v),
        Err(e) => Err(js_error_text(&e)),
    }
}
