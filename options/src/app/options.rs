//! The options page: the model manager (download with per-file progress, resume, cancel,
//! delete, storage usage, import of a local GGUF file) and the settings the popup uses (hosts,
//! sampling, backend).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

use super::chrome::{from_js, js_error_text, runtime_connect, runtime_send_message, to_js, Port};
use super::protocol::{
    catalog_entry, local_model_id, BackendPreference, EngineEvent, EngineRequest, ModelManifest, ModelState, RequestId,
    ServiceWorkerReply, ServiceWorkerRequest, Settings, CATALOG, ENGINE_PORT, IMPORT_CHANNEL,
};
use super::settings;

#[derive(Clone, PartialEq, Default)]
struct Transfer {
    done: u64,
    total: u64,
    rate: f64,
    eta_s: f64,
}

/// The import of a local GGUF file, as the page shows it.
#[derive(Clone, PartialEq)]
struct Import {
    request: RequestId,
    name: String,
    model: String,
    done: u64,
    total: u64,
    outcome: ImportOutcome,
}

#[derive(Clone, PartialEq)]
enum ImportOutcome {
    Running,
    Done { sha256: String },
    Failed(String),
}

#[derive(Clone, PartialEq, Default)]
struct OptionsState {
    /// The last import started on this page.
    import: Option<Import>,
    /// `None` until the stored settings are read.
    settings: Option<Settings>,
    notice: Option<String>,
    connected: bool,
    models: Vec<ModelManifest>,
    usage: u64,
    quota: u64,
    /// Running downloads by model id.
    transfers: HashMap<String, Transfer>,
    /// The download request of each model, to route its events.
    requests: HashMap<RequestId, String>,
    /// Last error per model (download failures), shown in its row.
    errors: HashMap<String, String>,
}

enum OptionsAction {
    Loaded(Settings),
    SelectModel(String),
    SetHub(String),
    SetMirrors(String),
    SetSystemPrompt(String),
    SetMaxTokens(u32),
    SetTemperature(f32),
    SetBackend(BackendPreference),
    Notice(String),
    Connected,
    Started { id: RequestId, model: String },
    ImportStarted { id: RequestId, name: String, size: u64 },
    Engine(EngineEvent),
}

impl Reducible for OptionsState {
    type Action = OptionsAction;

    fn reduce(self: Rc<Self>, action: OptionsAction) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            OptionsAction::Loaded(settings) => next.settings = Some(settings),
            OptionsAction::Notice(text) => next.notice = Some(text),
            OptionsAction::Connected => next.connected = true,
            OptionsAction::Started { id, model } => {
                next.errors.remove(&model);
                next.transfers.insert(model.clone(), Transfer::default());
                next.requests.insert(id, model);
            }
            OptionsAction::ImportStarted { id, name, size } => {
                let model = local_model_id(&name);
                next.import = Some(Import { request: id, name, model, done: 0, total: size, outcome: ImportOutcome::Running });
            }
            OptionsAction::Engine(event) => next.apply(event),
            edit => {
                let Some(settings) = next.settings.as_mut() else { return self };
                match edit {
                    OptionsAction::SelectModel(id) => settings.model_id = id,
                    OptionsAction::SetHub(url) => settings.hub_url = url,
                    OptionsAction::SetMirrors(text) => settings.mirrors = text.lines().map(str::to_string).collect(),
                    OptionsAction::SetSystemPrompt(text) => settings.system_prompt = text,
                    OptionsAction::SetMaxTokens(n) => settings.chat.max_tokens = n.max(1),
                    OptionsAction::SetTemperature(t) => settings.chat.temperature = t.clamp(0.0, 2.0),
                    OptionsAction::SetBackend(b) => settings.backend = b,
                    _ => {}
                }
                next.notice = None;
            }
        }
        Rc::new(next)
    }
}

impl OptionsState {
    fn apply(&mut self, event: EngineEvent) {
        if let Some(import) = self.import.as_mut().filter(|i| i.request == event.id()) {
            match &event {
                EngineEvent::DownloadProgress { done, total, .. } => (import.done, import.total) = (*done, *total),
                EngineEvent::Models { models, .. } => {
                    let stored = models.iter().find(|m| m.id == import.model);
                    let sha256 = stored.and_then(|m| m.files.first()).and_then(|f| f.sha256.clone()).unwrap_or_default();
                    import.outcome = ImportOutcome::Done { sha256 };
                }
                EngineEvent::Error { message, .. } => {
                    import.outcome = ImportOutcome::Failed(message.clone());
                    return;
                }
                _ => {}
            }
            if matches!(event, EngineEvent::DownloadProgress { .. }) {
                return;
            }
        }
        match event {
            EngineEvent::DownloadProgress { model, done, total, rate, eta_s, .. } => {
                self.transfers.insert(model, Transfer { done, total, rate, eta_s });
            }
            EngineEvent::Models { id, models, usage, quota } => {
                if let Some(model) = self.requests.remove(&id) {
                    self.transfers.remove(&model);
                }
                self.models = models;
                self.usage = usage;
                self.quota = quota;
            }
            EngineEvent::Error { id, message } => match self.requests.remove(&id) {
                Some(model) => {
                    self.transfers.remove(&model);
                    self.errors.insert(model, message);
                }
                None => self.notice = Some(message),
            },
            _ => {}
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The port to the engine host and the next request id.
#[derive(Default)]
struct EngineLink {
    port: Option<Port>,
    next_id: RequestId,
}

impl EngineLink {
    fn send(&mut self, request: impl FnOnce(RequestId) -> EngineRequest) -> Result<RequestId, String> {
        let port = self.port.as_ref().ok_or("not connected to the engine")?;
        self.next_id += 1;
        let id = self.next_id;
        let value = to_js(&request(id)).map_err(|e| js_error_text(&e))?;
        port.post_message(&value).map_err(|e| js_error_text(&e))?;
        Ok(id)
    }
}

async fn connect(link: Rc<RefCell<EngineLink>>, dispatch: UseReducerDispatcher<OptionsState>) -> Result<(), String> {
    let ensure = to_js(&ServiceWorkerRequest::EnsureEngine { id: 1 }).map_err(|e| js_error_text(&e))?;
    let reply = runtime_send_message(&ensure).await.map_err(|e| js_error_text(&e))?;
    if let ServiceWorkerReply::Error { message, .. } = from_js::<ServiceWorkerReply>(reply).map_err(|e| js_error_text(&e))? {
        return Err(message);
    }
    let info = js_sys::Object::new();
    js_sys::Reflect::set(&info, &"name".into(), &ENGINE_PORT.into()).map_err(|e| js_error_text(&e))?;
    let port = runtime_connect(&info);
    let greeted = Rc::new(std::cell::Cell::new(false));
    let on_event_link = link.clone();
    let on_event_dispatch = dispatch.clone();
    let on_event = Closure::<dyn Fn(JsValue)>::new(move |message: JsValue| match from_js::<EngineEvent>(message) {
        Ok(event) => {
            if matches!(event, EngineEvent::Status { id: 0, .. }) && !greeted.replace(true) {
                on_event_dispatch.dispatch(OptionsAction::Connected);
                let _ = on_event_link.borrow_mut().send(|id| EngineRequest::ListModels { id });
            }
            on_event_dispatch.dispatch(OptionsAction::Engine(event));
        }
        Err(e) => on_event_dispatch.dispatch(OptionsAction::Notice(js_error_text(&e))),
    });
    port.on_message().add_listener(on_event.as_ref().unchecked_ref());
    let on_disconnect = Closure::<dyn Fn()>::new(move || {
        dispatch.dispatch(OptionsAction::Notice("The engine stopped; reload this page.".into()))
    });
    port.on_disconnect().add_listener(on_disconnect.as_ref().unchecked_ref());
    on_event.forget();
    on_disconnect.forget();
    link.borrow_mut().port = Some(port);
    Ok(())
}

#[function_component(OptionsApp)]
pub fn options_app() -> Html {
    let state = use_reducer(OptionsState::default);
    let link = use_mut_ref(EngineLink::default);
    {
        let dispatch = state.dispatcher();
        let link = link.clone();
        use_effect_with((), move |_| {
            spawn_local(async move {
                match settings::load().await {
                    Ok(s) => dispatch.dispatch(OptionsAction::Loaded(s)),
                    Err(e) => dispatch.dispatch(OptionsAction::Notice(format!("Cannot read settings: {e}"))),
                }
                if let Err(e) = connect(link, dispatch.clone()).await {
                    dispatch.dispatch(OptionsAction::Notice(format!("Cannot start the engine: {e}")));
                }
            });
        });
    }
    let Some(current) = state.settings.clone() else {
        return html! { <p>{ state.notice.clone().unwrap_or_else(|| "Loading…".into()) }</p> };
    };

    let on_save = {
        let state = state.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(settings) = state.settings.clone() else { return };
            let dispatch = state.dispatcher();
            spawn_local(async move {
                let notice = match settings::save(&settings).await {
                    Ok(()) => "Saved.".to_string(),
                    Err(e) => format!("Cannot save: {e}"),
                };
                dispatch.dispatch(OptionsAction::Notice(notice));
            });
        })
    };
    let input_action = |make: fn(String) -> Option<OptionsAction>| {
        let dispatch = state.dispatcher();
        Callback::from(move |e: InputEvent| {
            let target = e.target_unchecked_into::<web_sys::Element>();
            let value = if let Some(t) = target.dyn_ref::<HtmlTextAreaElement>() {
                t.value()
            } else {
                target.unchecked_into::<HtmlInputElement>().value()
            };
            if let Some(action) = make(value) {
                dispatch.dispatch(action);
            }
        })
    };
    let on_hub = input_action(|v| Some(OptionsAction::SetHub(v)));
    let on_mirrors = input_action(|v| Some(OptionsAction::SetMirrors(v)));
    let on_system = input_action(|v| Some(OptionsAction::SetSystemPrompt(v)));
    let on_max_tokens = input_action(|v| v.parse().ok().map(OptionsAction::SetMaxTokens));
    let on_temperature = input_action(|v| v.parse().ok().map(OptionsAction::SetTemperature));
    let on_backend = {
        let dispatch = state.dispatcher();
        Callback::from(move |e: Event| {
            let pref = match e.target_unchecked_into::<HtmlSelectElement>().value().as_str() {
                "webgpu" => BackendPreference::WebGpu,
                "cpu" => BackendPreference::Cpu,
                "simulator" => BackendPreference::Simulator,
                _ => BackendPreference::Auto,
            };
            dispatch.dispatch(OptionsAction::SetBackend(pref));
        })
    };

    let send = {
        let link = link.clone();
        let dispatch = state.dispatcher();
        move |request: Box<dyn FnOnce(RequestId) -> EngineRequest>, model: Option<String>| {
            match link.borrow_mut().send(request) {
                Ok(id) => {
                    if let Some(model) = model {
                        dispatch.dispatch(OptionsAction::Started { id, model });
                    }
                }
                Err(message) => dispatch.dispatch(OptionsAction::Notice(message)),
            }
        }
    };

    // Import: the file goes to the engine host on a BroadcastChannel (ports carry JSON only),
    // the request on the port; a token pairs them.
    let on_import = {
        let link = link.clone();
        let dispatch = state.dispatcher();
        Callback::from(move |e: Event| {
            let input = e.target_unchecked_into::<HtmlInputElement>();
            let Some(file) = input.files().and_then(|files| files.get(0)) else { return };
            let (name, size) = (file.name(), file.size() as u64);
            let token = format!("{}-{}", js_sys::Date::now(), js_sys::Math::random());
            let handed_over = web_sys::BroadcastChannel::new(IMPORT_CHANNEL).and_then(|channel| {
                let message = js_sys::Object::new();
                js_sys::Reflect::set(&message, &"token".into(), &token.clone().into())?;
                js_sys::Reflect::set(&message, &"file".into(), &file)?;
                channel.post_message(&message)?;
                channel.close();
                Ok(())
            });
            if let Err(e) = handed_over {
                dispatch.dispatch(OptionsAction::Notice(format!("Cannot import: {}", js_error_text(&e))));
                return;
            }
            match link.borrow_mut().send(|id| EngineRequest::Import { id, token, name: name.clone(), size }) {
                Ok(id) => dispatch.dispatch(OptionsAction::ImportStarted { id, name, size }),
                Err(message) => dispatch.dispatch(OptionsAction::Notice(message)),
            }
            // The same file may be picked again (after deleting it, say).
            input.set_value("");
        })
    };
    let import_status = state.import.as_ref().map(|import| {
        let (status, text) = match &import.outcome {
            ImportOutcome::Running => ("running", format!("Storing {}: {}%…", import.name, import.done * 100 / import.total.max(1))),
            ImportOutcome::Done { .. } => ("done", format!("Imported {} as {}: stored, header checked. sha256 ", import.name, import.model)),
            ImportOutcome::Failed(message) => ("failed", message.clone()),
        };
        let sha256 = match &import.outcome {
            ImportOutcome::Done { sha256 } => Some(sha256.clone()),
            _ => None,
        };
        html! {
            <div id="import-status" data-state={status} class={classes!("import-status", (status == "failed").then_some("error"))}>
                { text }
                if let Some(sha256) = sha256 { <code id="import-sha256">{ sha256 }</code> }
            </div>
        }
    });
    // Imported models: in the store, not in the catalog.
    let imported_rows = state.models.iter().filter(|m| catalog_entry(&m.id).is_none()).map(|m| {
        let dispatch = state.dispatcher();
        let id = m.id.clone();
        let file = m.files.first();
        let ready = m.state == ModelState::Ready;
        let sha256 = file.and_then(|f| f.sha256.clone()).unwrap_or_default();
        let delete = {
            let send = send.clone();
            let model = m.id.clone();
            Callback::from(move |_: MouseEvent| {
                let model = model.clone();
                send(Box::new(move |id| EngineRequest::DeleteModel { id, model }), None)
            })
        };
        html! {
            <tr data-model={m.id.clone()} data-state={if ready { "ready" } else { "partial" }}>
                <td><input type="radio" name="model" checked={current.model_id == m.id} disabled={!ready}
                    onchange={Callback::from(move |_| dispatch.dispatch(OptionsAction::SelectModel(id.clone())))} /></td>
                <td>{ file.map(|f| f.name.clone()).unwrap_or_default() }<br/><code class="path">{ format!("imported · sha256 {sha256}") }</code></td>
                <td>{ "GGUF" }</td>
                <td>{ megabytes(m.size()) }</td>
                <td class="progress-cell"><span class="detail">{ if ready { "Ready (imported, header checked)" } else { "Incomplete import" } }</span></td>
                <td class="actions"><button class="delete" onclick={delete}>{ "Delete" }</button></td>
            </tr>
        }
    }).collect::<Html>();

    let storage = if state.quota > 0 {
        format!("Storage: {} used of {} available to the extension", megabytes(state.usage), megabytes(state.quota))
    } else {
        "Storage: unknown".to_string()
    };

    html! {
        <div>
            <h1>{ "QWGLM settings" }</h1>
            <h2>{ "Models" }</h2>
            <p id="storage">{ storage }</p>
            <table class="models" id="models">
                <tr><th></th><th>{ "Model" }</th><th>{ "Format" }</th><th>{ "Size" }</th><th>{ "Stored" }</th><th></th></tr>
                { for CATALOG.iter().map(|entry| {
                    let dispatch = state.dispatcher();
                    let id = entry.id.to_string();
                    let stored = state.models.iter().find(|m| m.id == entry.id);
                    let transfer = state.transfers.get(entry.id);
                    let row_state = match (transfer, stored.map(|m| m.state)) {
                        (Some(_), _) => "downloading",
                        (None, Some(ModelState::Ready)) => "ready",
                        (None, Some(ModelState::Downloading)) => "partial",
                        (None, None) => "absent",
                    };
                    let (done, total) = match (transfer, stored) {
                        (Some(t), _) if t.total > 0 => (t.done, t.total),
                        (_, Some(m)) => (m.stored(), m.size().max(1)),
                        _ => (0, entry.size_bytes),
                    };
                    let percent = done * 100 / total.max(1);
                    let detail = match (transfer, row_state) {
                        (Some(t), _) => format!("{percent}% · {}/s · {:.0} s left", megabytes(t.rate as u64), t.eta_s),
                        (None, "ready") => "Ready (sha256 verified)".to_string(),
                        (None, "partial") => format!("{percent}% (paused)"),
                        _ => String::new(),
                    };
                    let hosts = current.hosts();
                    let (download, cancel, delete) = {
                        let (s1, s2, s3) = (send.clone(), send.clone(), send.clone());
                        let (m1, m2, m3) = (id.clone(), id.clone(), id.clone());
                        (
                            Callback::from(move |_: MouseEvent| {
                                let (model, hosts) = (m1.clone(), hosts.clone());
                                s1(Box::new(move |id| EngineRequest::Download { id, model, hosts }), Some(m1.clone()))
                            }),
                            Callback::from(move |_: MouseEvent| {
                                let model = m2.clone();
                                s2(Box::new(move |id| EngineRequest::CancelDownload { id, model }), None)
                            }),
                            Callback::from(move |_: MouseEvent| {
                                let model = m3.clone();
                                s3(Box::new(move |id| EngineRequest::DeleteModel { id, model }), None)
                            }),
                        )
                    };
                    html! {
                        <tr data-model={entry.id} data-state={row_state}>
                            <td><input type="radio" name="model" checked={current.model_id == entry.id}
                                onchange={Callback::from(move |_| dispatch.dispatch(OptionsAction::SelectModel(id.clone())))} /></td>
                            <td>{ entry.name }<br/><code class="path">{ format!("{}/{}", entry.repo, entry.file) }</code></td>
                            <td>{ entry.format }</td>
                            <td>{ megabytes(entry.size_bytes) }</td>
                            <td class="progress-cell">
                                <progress max="100" value={percent.to_string()} data-done={done.to_string()} data-total={total.to_string()} />
                                <span class="detail">{ detail }</span>
                                if let Some(error) = state.errors.get(entry.id) {
                                    <div class="row-error">{ error }</div>
                                }
                            </td>
                            <td class="actions">
                                if row_state == "downloading" {
                                    <button class="cancel" onclick={cancel}>{ "Cancel" }</button>
                                } else if row_state != "ready" {
                                    <button class="download" disabled={!state.connected} onclick={download}>
                                        { if row_state == "partial" { "Resume" } else { "Download" } }
                                    </button>
                                }
                                if stored.is_some() && row_state != "downloading" {
                                    <button class="delete" onclick={delete}>{ "Delete" }</button>
                                }
                            </td>
                        </tr>
                    }
                }) }
                { imported_rows }
            </table>
            <h3>{ "Import a GGUF file" }</h3>
            <p class="hint">{ "A model file from this computer is stored in the extension like a download: its sha256 is computed and its GGUF header checked before it can be used." }</p>
            <input id="import-file" type="file" accept=".gguf" disabled={!state.connected} onchange={on_import} />
            { for import_status }
            <label>{ "Download host (Hugging Face Hub or a mirror with the same layout)" }
                <input id="hub-url" type="url" value={current.hub_url.clone()} oninput={on_hub} />
            </label>
            <label>{ "Mirrors, one per line (tried in order when the host fails)" }
                <textarea id="mirrors" value={current.mirrors.join("\n")} oninput={on_mirrors} />
            </label>
            <h2>{ "Chat" }</h2>
            <label>{ "System prompt" }
                <textarea id="system-prompt" value={current.system_prompt.clone()} oninput={on_system} />
            </label>
            <label>{ "Most tokens per answer" }
                <input id="max-tokens" type="number" min="1" value={current.chat.max_tokens.to_string()} oninput={on_max_tokens} />
            </label>
            <label>{ "Temperature (0 = greedy)" }
                <input id="temperature" type="number" min="0" max="2" step="0.1" value={current.chat.temperature.to_string()} oninput={on_temperature} />
            </label>
            <label>{ "Backend" }
                <select id="backend" onchange={on_backend}>
                    <option value="auto" selected={current.backend == BackendPreference::Auto}>{ "Auto (WebGPU when available, else the GPU simulator)" }</option>
                    <option value="webgpu" selected={current.backend == BackendPreference::WebGpu}>{ "WebGPU" }</option>
                    <option value="cpu" selected={current.backend == BackendPreference::Cpu}>{ "CPU (reference device)" }</option>
                    <option value="simulator" selected={current.backend == BackendPreference::Simulator}>{ "GPU simulator (the WebGPU kernels on the CPU; slow)" }</option>
                </select>
            </label>
            <button id="save" onclick={on_save}>{ "Save" }</button>
            <span id="notice">{ state.notice.clone().unwrap_or_default() }</span>
        </div>
    }
}
