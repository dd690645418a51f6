//! The engine host: owns the loaded model and serves client pages. It runs in a dedicated worker
//! started by the offscreen document (`engine-worker.js`), so forward passes never block the
//! renderer main thread that all extension pages share; the offscreen document relays each page's
//! port as a [`ClientId`] ([`RelayToWorker`] / [`WorkerToRelay`], see `relay.rs`). Requests are
//! independent tasks; one model load or generation runs at a time.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use engine::chat::{ChatMessage, ChatTemplate, RenderOptions};
use engine::config::ModelConfig;
use engine::device::{Device, RefDevice};
use engine::generate::{generate, CancelToken, GenerateOptions, StopReason};
use engine::model::{Model, ModelOptions};
use engine::sampling::SamplingParams;
use engine::session::Session;
use engine::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::chrome::{from_js, js_error_text, to_js};
use crate::error::{ExtensionError, Result};
use crate::relay::post_to_parent;
use crate::protocol::{
    Backend, ChatOptions, ClientId, EngineEvent, EngineRequest, EngineStatus, GenerationSnapshot, LoadStage, Message, ModelRef,
    RelayToWorker, RequestId, ServiceWorkerRequest, WorkerToRelay,
};
use crate::download::{download, sleep_ms, DownloadCancel, FileSpec};
use crate::import::import_file;
use crate::protocol::{catalog_entry, local_model_id, BackendPreference, ModelManifest, ModelState, IMPORT_CHANNEL};
use crate::store::{storage_estimate, ModelStore, StoredGguf};
use crate::yielding::YieldingDevice;

/// KV cache length. The reference device keeps the cache in wasm memory (30 layers x 2048 tokens
/// is ~94 MB for SmolLM2), so stay well below the models' 8k-32k maximum for now.
const CONTEXT_TOKENS: usize = 2048;

struct LoadedModel {
    model: ModelRef,
    backend: Backend,
    /// The device preference it was loaded with (another preference reloads it).
    preference: BackendPreference,
    session: Session,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

#[derive(Default)]
struct HostState {
    /// `None` while no model is loaded, and while a job has taken it out to work on it.
    loaded: RefCell<Option<LoadedModel>>,
    loaded_id: RefCell<Option<String>>,
    backend: Cell<Option<Backend>>,
    busy: Cell<bool>,
    /// Opened on first use.
    store: RefCell<Option<Rc<ModelStore>>>,
    /// Running downloads, by model id.
    downloads: RefCell<HashMap<String, DownloadCancel>>,
    /// The generation running now (one at a time).
    generation: RefCell<Option<Rc<Generation>>>,
    /// Files handed over for import on the `BroadcastChannel`, by token, until their request.
    pending_imports: RefCell<HashMap<String, web_sys::Blob>>,
    /// Kept open for the host's lifetime.
    import_channel: RefCell<Option<web_sys::BroadcastChannel>>,
    /// The connected client pages, by the id the offscreen document gave their port.
    clients: RefCell<HashMap<ClientId, Rc<Client>>>,
}

/// A running generation. It belongs to the host, not to the page that asked for it: it goes on
/// when that page closes, and any page may follow it (`Attach`).
struct Generation {
    conversation: Option<String>,
    cancel: CancelToken,
    text: RefCell<String>,
    token_ids: RefCell<Vec<u32>>,
    /// The clients following it, each with the request id its events carry for that client.
    watchers: RefCell<Vec<(Rc<Client>, RequestId)>>,
}

impl Generation {
    fn send(&self, event: impl Fn(RequestId) -> EngineEvent) {
        for (client, id) in self.watchers.borrow().iter() {
            client.send(&event(*id));
        }
    }

    fn snapshot(&self) -> GenerationSnapshot {
        GenerationSnapshot {
            conversation: self.conversation.clone(),
            text: self.text.borrow().clone(),
            token_ids: self.token_ids.borrow().clone(),
        }
    }
}

impl HostState {
    async fn store(&self) -> Result<Rc<ModelStore>> {
        if let Some(store) = self.store.borrow().clone() {
            return Ok(store);
        }
        let store = Rc::new(ModelStore::open().await?);
        *self.store.borrow_mut() = Some(store.clone());
        Ok(store)
    }
}

/// Marks the host busy for as long as it lives (so an error path cannot leave it stuck busy).
struct BusyGuard<'a>(&'a Cell<bool>);

impl<'a> BusyGuard<'a> {
    fn acquire(flag: &'a Cell<bool>) -> Result<Self> {
        if flag.replace(true) {
            return Err(ExtensionError::Busy);
        }
        Ok(Self(flag))
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// One connected client page, reached through the offscreen document's relay.
struct Client {
    id: ClientId,
}

impl Client {
    /// Sends an event; a client that went away is not an error (the relay drops the event, and
    /// the generation goes on).
    fn send(&self, event: &EngineEvent) {
        post_to_relay(&WorkerToRelay::Event { client: self.id, event: event.clone() });
    }
}

/// Posts a message to the offscreen document (this worker's parent).
fn post_to_relay(message: &WorkerToRelay) {
    let outcome = to_js(message).and_then(|value| post_to_parent(&value));
    if let Err(e) = outcome {
        web_sys::console::error_1(&format!("qwglm engine: cannot reach the offscreen document: {}", js_error_text(&e)).into());
    }
}

/// The engine host in its dedicated worker: `engine-worker.js` creates it and hands it every
/// message from the offscreen document.
#[wasm_bindgen]
pub struct EngineWorker {
    state: Rc<HostState>,
}

#[wasm_bindgen]
impl EngineWorker {
    #[wasm_bindgen(constructor)]
    pub fn new() -> EngineWorker {
        crate::install_panic_hook();
        engine::clock::set_host_clock(performance_now);
        let state: Rc<HostState> = Rc::default();
        if let Err(e) = listen_for_imports(&state) {
            web_sys::console::error_1(&format!("qwglm: imports unavailable: {}", js_error_text(&e)).into());
        }
        EngineWorker { state }
    }

    /// One message from the offscreen document (a [`RelayToWorker`]).
    pub fn on_message(&self, message: JsValue) {
        match from_js::<RelayToWorker>(message) {
            // The host speaks first (an unsolicited `Status` with id 0): clients wait for it, so no
            // request is sent before the relay listens on their port.
            Ok(RelayToWorker::Connect { client }) => {
                let client = Rc::new(Client { id: client });
                self.state.clients.borrow_mut().insert(client.id, client.clone());
                client.send(&EngineEvent::Status { id: 0, status: status(&self.state) });
            }
            Ok(RelayToWorker::Request { client, request }) => {
                let client = self.state.clients.borrow().get(&client).cloned();
                if let Some(client) = client {
                    spawn_local(handle(self.state.clone(), client, request));
                }
            }
            // A closed page stops following the generation; the generation itself goes on (its
            // answer is saved when it ends, and a reopened popup re-attaches to it).
            Ok(RelayToWorker::Disconnect { client }) => {
                let gone = self.state.clients.borrow_mut().remove(&client);
                if let (Some(gone), Some(generation)) = (gone, self.state.generation.borrow().as_ref()) {
                    generation.watchers.borrow_mut().retain(|(c, _)| !Rc::ptr_eq(c, &gone));
                }
            }
            Err(e) => web_sys::console::error_1(&format!("qwglm engine: {}", js_error_text(&e)).into()),
        }
    }
}

/// Ports carry JSON only, so an imported file (a `Blob`) comes on a `BroadcastChannel`, keyed by
/// the token its `Import` request names.
fn listen_for_imports(state: &Rc<HostState>) -> Result<(), JsValue> {
    let channel = web_sys::BroadcastChannel::new(IMPORT_CHANNEL)?;
    let on_message_state = Rc::downgrade(state);
    let on_message = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
        let data = event.data();
        let token = js_sys::Reflect::get(&data, &"token".into()).ok().and_then(|t| t.as_string());
        let file = js_sys::Reflect::get(&data, &"file".into()).ok().and_then(|f| f.dyn_into::<web_sys::Blob>().ok());
        if let (Some(state), Some(token), Some(file)) = (on_message_state.upgrade(), token, file) {
            state.pending_imports.borrow_mut().insert(token, file);
        }
    });
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    *state.import_channel.borrow_mut() = Some(channel);
    Ok(())
}

impl Default for EngineWorker {
    fn default() -> Self {
        Self::new()
    }
}

fn performance_now() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

fn status(state: &HostState) -> EngineStatus {
    EngineStatus { model: state.loaded_id.borrow().clone(), backend: state.backend.get().unwrap_or(Backend::Cpu), busy: state.busy.get() }
}

async fn handle(state: Rc<HostState>, client: Rc<Client>, request: EngineRequest) {
    let id = request.id();
    let outcome = match request {
        EngineRequest::Status { id } => {
            client.send(&EngineEvent::Status { id, status: status(&state) });
            Ok(())
        }
        EngineRequest::Stop { target, .. } => {
            if let Some(generation) = state.generation.borrow().as_ref() {
                // Whoever follows the generation may stop it, under the id its events carry.
                if generation.watchers.borrow().iter().any(|(c, id)| Rc::ptr_eq(c, &client) && *id == target) {
                    generation.cancel.cancel();
                }
            }
            Ok(())
        }
        EngineRequest::Attach { id } => {
            let snapshot = state.generation.borrow().as_ref().map(|generation| {
                generation.watchers.borrow_mut().push((client.clone(), id));
                generation.snapshot()
            });
            // Sent in the same task as the registration: the first Token after it is the next one.
            client.send(&EngineEvent::Attached { id, generation: snapshot });
            Ok(())
        }
        EngineRequest::Load { id, model, backend } => load_only(&state, &client, id, model, backend).await,
        EngineRequest::Download { id, model, hosts } => download_request(&state, &client, id, &model, &hosts).await,
        EngineRequest::CancelDownload { model, .. } => {
            if let Some(cancel) = state.downloads.borrow().get(&model) {
                cancel.cancel();
            }
            Ok(())
        }
        EngineRequest::ListModels { id } => send_models(&state, &client, id).await,
        EngineRequest::DeleteModel { id, model } => delete_model(&state, &client, id, &model).await,
        EngineRequest::Import { id, token, name, .. } => import_request(&state, &client, id, &token, &name).await,
        EngineRequest::Chat { id, model, messages, options, conversation } => {
            chat(&state, &client, id, model, messages, options, conversation).await
        }
    };
    if let Err(e) = outcome {
        client.send(&EngineEvent::Error { id, message: e.to_string() });
    }
}

async fn load_only(state: &HostState, client: &Client, id: RequestId, model: ModelRef, backend: BackendPreference) -> Result<()> {
    let _busy = BusyGuard::acquire(&state.busy)?;
    let loaded = take_or_load(state, client, id, &model, backend).await?;
    *state.loaded.borrow_mut() = Some(loaded);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn chat(
    state: &HostState,
    client: &Rc<Client>,
    id: RequestId,
    model: ModelRef,
    messages: Vec<Message>,
    options: ChatOptions,
    conversation: Option<String>,
) -> Result<()> {
    let _busy = BusyGuard::acquire(&state.busy)?;
    // The generation exists from the start, model load included: a page that attaches while the
    // model loads follows it (no text yet) and gets its tokens live.
    let generation = Rc::new(Generation {
        conversation,
        cancel: CancelToken::new(),
        text: RefCell::default(),
        token_ids: RefCell::default(),
        watchers: RefCell::new(vec![(client.clone(), id)]),
    });
    *state.generation.borrow_mut() = Some(generation.clone());
    let result = match take_or_load(state, client, id, &model, options.backend).await {
        Ok(mut loaded) => {
            let result = answer(&mut loaded, &generation, &messages, &options).await;
            *state.loaded.borrow_mut() = Some(loaded);
            if let Some(conversation) = &generation.conversation {
                let text = generation.text.borrow().clone();
                save_answer(conversation, &text);
            }
            result
        }
        Err(e) => Err(e),
    };
    *state.generation.borrow_mut() = None;
    if let Err(e) = &result {
        // The asking request gets the error from `handle`; pages that attached get it here.
        let message = e.to_string();
        for (watcher, watcher_id) in generation.watchers.borrow().iter() {
            if !(Rc::ptr_eq(watcher, client) && *watcher_id == id) {
                watcher.send(&EngineEvent::Error { id: *watcher_id, message: message.clone() });
            }
        }
    }
    result
}

/// Has the service worker (through the offscreen document, which logs any failure) write the
/// answer into the stored conversation: the page that asked may be closed by now.
fn save_answer(conversation: &str, text: &str) {
    let request = ServiceWorkerRequest::SaveAnswer { id: 0, conversation: conversation.to_string(), text: text.to_string() };
    post_to_relay(&WorkerToRelay::ToServiceWorker { request });
}

async fn answer(loaded: &mut LoadedModel, generation: &Generation, messages: &[Message], options: &ChatOptions) -> Result<()> {
    let messages: Vec<ChatMessage> = messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
    let render = RenderOptions {
        add_generation_prompt: true,
        // wasm32 has no system clock of its own; templates that print today's date need one.
        now_unix_secs: Some((js_sys::Date::now() / 1000.0) as i64),
        ..RenderOptions::default()
    };
    let prompt = loaded.template.render(&messages, &render)?;
    // The rendered template already holds any BOS the model wants.
    let prompt_ids = loaded.tokenizer.encode(&prompt, false)?;
    let generate_options = GenerateOptions {
        max_tokens: options.max_tokens as usize,
        sampling: SamplingParams { temperature: options.temperature, seed: u64::from(options.seed), ..SamplingParams::default() },
        stop_tokens: loaded.tokenizer.eos_ids().to_vec(),
        ..GenerateOptions::default()
    };
    // Stopped while its model loaded: no prefill for an answer nobody wants any more.
    if generation.cancel.is_cancelled() {
        generation.send(|id| EngineEvent::Done {
            id,
            stop_reason: stop_reason_name(&StopReason::Cancelled),
            generated_ids: Vec::new(),
            prompt_tokens: prompt_ids.len() as u32,
            decode_tok_per_s: 0.0,
        });
        return Ok(());
    }
    let result = generate(
        &mut loaded.session,
        &loaded.tokenizer,
        &prompt_ids,
        &generate_options,
        Some(&generation.cancel),
        &mut |token| {
            generation.text.borrow_mut().push_str(token.text);
            generation.token_ids.borrow_mut().push(token.id);
            generation.send(|id| EngineEvent::Token { id, token_id: token.id, text: token.text.to_string() });
        },
    )
    .await?;
    let stop_reason = stop_reason_name(&result.stop_reason);
    let decode_tok_per_s = result.timings.decode_tok_per_s();
    generation.send(|id| EngineEvent::Done {
        id,
        stop_reason: stop_reason.clone(),
        generated_ids: result.generated_ids.clone(),
        prompt_tokens: result.prompt_ids.len() as u32,
        decode_tok_per_s,
    });
    Ok(())
}

/// `StopReason`'s serde name (`stop_token`, `max_tokens`, ...), without pulling in serde_json.
fn stop_reason_name(reason: &engine::generate::StopReason) -> String {
    to_js(reason).ok().and_then(|v| v.as_string()).unwrap_or_else(|| format!("{reason:?}"))
}

/// Takes the loaded model out of the host if it is `model`, else loads `model` (dropping any
/// other first, so two models never share the wasm heap).
async fn take_or_load(
    state: &HostState,
    client: &Client,
    id: RequestId,
    model: &ModelRef,
    preference: BackendPreference,
) -> Result<LoadedModel> {
    let current = state.loaded.borrow_mut().take();
    if let Some(loaded) = current {
        if loaded.model == *model && loaded.preference == preference {
            return Ok(loaded);
        }
    }
    *state.loaded_id.borrow_mut() = None;
    state.backend.set(None);
    let t0 = performance_now();
    let (loaded, fallback) = load(state, client, id, model, preference).await?;
    *state.loaded_id.borrow_mut() = Some(model.id.clone());
    state.backend.set(Some(loaded.backend));
    client.send(&EngineEvent::Loaded { id, model: model.id.clone(), backend: loaded.backend, load_ms: performance_now() - t0, fallback });
    Ok(loaded)
}

/// The device for a preference. Auto and WebGPU open WebGPU (the engine's WgpuDevice) when an
/// adapter and device are available. Without one, Auto falls back to the GPU simulator (the same
/// WGSL kernels on the CPU), an explicit WebGPU choice to the reference device; "CPU" is always
/// the reference device. The reason for any fallback comes back with the device.
async fn open_device(preference: BackendPreference) -> (Box<dyn Device>, Backend, Option<String>) {
    let webgpu_problem = match preference {
        BackendPreference::Cpu => return (Box::new(YieldingDevice::new(RefDevice::new())), Backend::Cpu, None),
        BackendPreference::Simulator => None,
        BackendPreference::Auto | BackendPreference::WebGpu => {
            if has_webgpu_adapter().await {
                match engine::device::WgpuDevice::new(engine::device::WgpuOptions::default()).await {
                    Ok(device) => return (Box::new(device), Backend::WebGpu, None),
                    Err(e) => Some(format!("WebGPU did not start ({e})")),
                }
            } else {
                Some("WebGPU is not available in this browser (no GPU adapter)".to_string())
            }
        }
    };
    if preference == BackendPreference::WebGpu {
        let problem = webgpu_problem.unwrap_or_default();
        return (Box::new(YieldingDevice::new(RefDevice::new())), Backend::Cpu, Some(format!("{problem}; running on the CPU reference device")));
    }
    // Auto without WebGPU, or the simulator chosen.
    match qwglm_sim::SimDevice::new(qwglm_sim::SimOptions::default()) {
        Ok(device) => {
            let note = webgpu_problem.map(|problem| format!("{problem}; the GPU simulator runs the WebGPU kernels on the CPU (slow)"));
            (Box::new(YieldingDevice::new(device)), Backend::Simulator, note)
        }
        Err(e) => {
            let problem = webgpu_problem.map(|p| format!("{p}; ")).unwrap_or_default();
            let note = format!("{problem}the GPU simulator did not start ({e}); running on the CPU reference device");
            (Box::new(YieldingDevice::new(RefDevice::new())), Backend::Cpu, Some(note))
        }
    }
}

/// Whether `navigator.gpu.requestAdapter()` gives an adapter (headless Chromium without
/// `--enable-unsafe-webgpu` has `navigator.gpu` but answers null).
async fn has_webgpu_adapter() -> bool {
    let Ok(gpu) = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).and_then(|n| js_sys::Reflect::get(&n, &"gpu".into())) else {
        return false;
    };
    if gpu.is_undefined() || gpu.is_null() {
        return false;
    }
    let Ok(request) = js_sys::Reflect::get(&gpu, &"requestAdapter".into()).and_then(|f| f.dyn_into::<js_sys::Function>())
    else {
        return false;
    };
    let Ok(promise) = request.call0(&gpu).and_then(|p| p.dyn_into::<js_sys::Promise>()) else {
        return false;
    };
    wasm_bindgen_futures::JsFuture::from(promise).await.is_ok_and(|adapter| !adapter.is_undefined() && !adapter.is_null())
}

async fn send_models(state: &HostState, client: &Client, id: RequestId) -> Result<()> {
    let store = state.store().await?;
    let models = store.manifests().await?;
    let (usage, quota) = storage_estimate().await.unwrap_or((0, 0));
    client.send(&EngineEvent::Models { id, models, usage, quota });
    Ok(())
}

async fn delete_model(state: &HostState, client: &Client, id: RequestId, model: &str) -> Result<()> {
    if state.downloads.borrow().contains_key(model) {
        return Err(ExtensionError::Store(format!("{model} is downloading: cancel it first")));
    }
    if state.loaded_id.borrow().as_deref() == Some(model) {
        let _busy = BusyGuard::acquire(&state.busy)?;
        *state.loaded.borrow_mut() = None;
        *state.loaded_id.borrow_mut() = None;
    }
    state.store().await?.delete(model).await?;
    send_models(state, client, id).await
}

/// Downloads catalog model `model` from `hosts` (Hub layout, in order) into the store.
async fn download_request(state: &HostState, client: &Client, id: RequestId, model: &str, hosts: &[String]) -> Result<()> {
    let entry = catalog_entry(model).ok_or_else(|| ExtensionError::UnknownModel(model.to_string()))?;
    let urls: Vec<String> = hosts.iter().map(|h| entry.url(h)).collect();
    ensure_stored(state, client, id, model, entry.file, &urls, entry.sha256, false).await?;
    send_models(state, client, id).await
}

/// Imports the file handed over under `token` as model `local_model_id(name)`.
async fn import_request(state: &HostState, client: &Client, id: RequestId, token: &str, name: &str) -> Result<()> {
    // The file and the request travel separately: wait a little for the file.
    let mut waited = 0.0;
    let file = loop {
        if let Some(file) = state.pending_imports.borrow_mut().remove(token) {
            break file;
        }
        if waited > 30_000.0 {
            return Err(ExtensionError::ImportRejected { file: name.to_string(), reason: "the file never reached the engine".into() });
        }
        sleep_ms(50.0).await;
        waited += 50.0;
    };
    let model = local_model_id(name);
    if state.loaded_id.borrow().as_deref() == Some(model.as_str()) {
        return Err(ExtensionError::Store(format!("{model} is loaded; select another model before importing it again")));
    }
    let cancel = {
        let mut downloads = state.downloads.borrow_mut();
        if downloads.contains_key(&model) {
            return Err(ExtensionError::Store(format!("{model} is already being stored")));
        }
        let cancel = DownloadCancel::default();
        downloads.insert(model.clone(), cancel.clone());
        cancel
    };
    let store = state.store().await;
    let result = match store {
        Ok(store) => {
            import_file(&store, &file, &model, name, &cancel, &mut |p| {
                client.send(&EngineEvent::DownloadProgress {
                    id,
                    model: model.clone(),
                    file: p.file.to_string(),
                    done: p.done,
                    total: p.total,
                    rate: p.rate,
                    eta_s: p.eta_s,
                });
            })
            .await
        }
        Err(e) => Err(e),
    };
    state.downloads.borrow_mut().remove(&model);
    result?;
    send_models(state, client, id).await
}

/// The model's manifest once it is stored and verified, downloading it first when needed.
/// `as_load` reports progress as `LoadProgress` (chat) rather than `DownloadProgress` (options).
#[allow(clippy::too_many_arguments)]
async fn ensure_stored(
    state: &HostState,
    client: &Client,
    id: RequestId,
    model: &str,
    file: &str,
    urls: &[String],
    sha256: Option<&str>,
    as_load: bool,
) -> Result<ModelManifest> {
    let store = state.store().await?;
    if let Some(m) = store.manifest(model).await? {
        if m.state == ModelState::Ready {
            return Ok(m);
        }
    }
    let cancel = {
        let mut downloads = state.downloads.borrow_mut();
        if downloads.contains_key(model) {
            return Err(ExtensionError::Store(format!("{model} is already downloading")));
        }
        let cancel = DownloadCancel::default();
        downloads.insert(model.to_string(), cancel.clone());
        cancel
    };
    let spec = FileSpec { model, file, urls, sha256 };
    let result = download(&store, &spec, &cancel, &mut |p| {
        if as_load {
            client.send(&EngineEvent::LoadProgress { id, stage: LoadStage::Download, done: p.done, total: p.total });
        } else {
            client.send(&EngineEvent::DownloadProgress {
                id,
                model: model.to_string(),
                file: p.file.to_string(),
                done: p.done,
                total: p.total,
                rate: p.rate,
                eta_s: p.eta_s,
            });
        }
    })
    .await;
    state.downloads.borrow_mut().remove(model);
    result
}

async fn load(
    state: &HostState,
    client: &Client,
    id: RequestId,
    model: &ModelRef,
    preference: BackendPreference,
) -> Result<(LoadedModel, Option<String>)> {
    let entry = catalog_entry(&model.id);
    let file = entry.map_or_else(|| model.url.rsplit('/').next().unwrap_or("model.gguf"), |e| e.file);
    let manifest = if model.url.is_empty() {
        // An imported model: only the store has it.
        let stored = state.store().await?.manifest(&model.id).await?;
        stored.filter(|m| m.state == ModelState::Ready).ok_or_else(|| {
            ExtensionError::Store(format!("{} is not in the model store; import it again on the options page", model.id))
        })?
    } else {
        ensure_stored(state, client, id, &model.id, file, std::slice::from_ref(&model.url), entry.and_then(|e| e.sha256), true).await?
    };
    let store = state.store().await?;
    let source = StoredGguf::open(&store, &manifest).await?;
    let total = manifest.size();
    client.send(&EngineEvent::LoadProgress { id, stage: LoadStage::Parse, done: total, total });
    let header = source.header();
    let config = ModelConfig::from_gguf(header)?;
    let tokenizer = Tokenizer::from_gguf(header)?;
    let template = ChatTemplate::from_gguf(header)?;

    let (mut device, backend, fallback) = open_device(preference).await;
    let options = ModelOptions { context: CONTEXT_TOKENS, ..ModelOptions::default() };
    let mut last_percent = u64::MAX;
    let mut progress = |p: engine::model::LoadProgress| {
        let percent = (p.bytes_done * 100).checked_div(p.bytes_total).unwrap_or(0);
        if percent != last_percent {
            last_percent = percent;
            client.send(&EngineEvent::LoadProgress { id, stage: LoadStage::Upload, done: p.bytes_done, total: p.bytes_total });
        }
    };
    // Tensors stream out of IndexedDB one at a time into device buffers.
    let loaded_model = Model::load_streamed(device.as_mut(), &source, config, options, &mut progress).await?;
    let session = Session::new(device, loaded_model);
    Ok((LoadedModel { model: model.clone(), backend, preference, session, tokenizer, template }, fallback))
}
