//! The popup: a chat with streamed answers, a stop button and a model/backend status line.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::HtmlTextAreaElement;
use yew::prelude::*;

use super::chrome::{
    from_js, js_error_text, runtime_connect, runtime_open_options_page, runtime_send_message, to_js, Port,
};
use super::protocol::{
    catalog_entry, ChatOptions, EngineEvent, EngineRequest, GenerationSnapshot, LoadStage, Message, ModelState, RequestId,
    ServiceWorkerReply, ServiceWorkerRequest, Settings, ENGINE_PORT,
};
use super::history::{self, Conversation, StoredTurn};
use super::settings;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Clone, PartialEq)]
struct Turn {
    role: Role,
    text: String,
}

/// What the engine did with the last answer; mirrored into data attributes for tests.
#[derive(Clone, PartialEq, Default)]
struct AnswerRecord {
    streamed_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    stop_reason: Option<String>,
}

#[derive(Clone, PartialEq, Default)]
struct ChatState {
    settings: Option<Settings>,
    /// The engine host greeted us; requests may be sent.
    connected: bool,
    /// "model · backend" once the engine has told us.
    model_line: String,
    /// What the engine is doing now (loading progress, last decode speed).
    activity: String,
    error: Option<String>,
    turns: Vec<Turn>,
    /// The chat request being answered.
    running: Option<RequestId>,
    answer: AnswerRecord,
    /// Every stored conversation (the current one included once it has a turn), newest last.
    conversations: Vec<Conversation>,
    /// Id of the conversation on screen.
    current: String,
    /// Bumped whenever `conversations` must be written back.
    unsaved: u32,
    /// Why WebGPU is not in use although it was wanted.
    fallback: Option<String>,
    /// Whether the selected model is downloaded and verified (`None` until the store answers):
    /// without it the popup shows the first-run screen instead of a chat that cannot answer.
    model_ready: Option<bool>,
}

enum ChatAction {
    SettingsLoaded(Settings),
    Engine(EngineEvent),
    Disconnected,
    Failed(String),
    /// Question `text` was sent as request `id`, in conversation `conversation`.
    Asked { id: RequestId, text: String, conversation: String },
    HistoryLoaded(Vec<Conversation>),
    /// The last answer is being asked for again (request `id`).
    Regenerate { id: RequestId },
    NewChat,
    Open(String),
}

fn now_id() -> String {
    format!("{}", js_sys::Date::now() as u64)
}

impl Reducible for ChatState {
    type Action = ChatAction;

    fn reduce(self: Rc<Self>, action: ChatAction) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            ChatAction::SettingsLoaded(settings) => next.settings = Some(settings),
            ChatAction::Failed(message) => {
                next.error = Some(message);
                next.running = None;
            }
            ChatAction::Disconnected => {
                next.connected = false;
                next.running = None;
                next.error = Some("The engine stopped (its page was closed or crashed). Reopen the popup.".into());
            }
            ChatAction::Asked { id, text, conversation } => {
                next.current = conversation;
                next.turns.push(Turn { role: Role::User, text });
                next.turns.push(Turn { role: Role::Assistant, text: String::new() });
                next.running = Some(id);
                next.error = None;
                next.answer = AnswerRecord::default();
                // Saved now, so the engine host can fill in the answer even if the popup closes.
                next.store_current();
            }
            ChatAction::Engine(event) => {
                let finished = matches!(&event, EngineEvent::Done { id, .. } if next.running == Some(*id));
                next.apply(event);
                if finished {
                    next.store_current();
                }
            }
            ChatAction::HistoryLoaded(conversations) => {
                // Reopened popup: show the latest conversation.
                if let Some(last) = conversations.last() {
                    if next.turns.is_empty() {
                        next.current = last.id.clone();
                        next.turns = restore(last);
                    }
                }
                next.conversations = conversations;
            }
            ChatAction::NewChat if next.running.is_none() => {
                next.current = now_id();
                next.turns.clear();
                next.answer = AnswerRecord::default();
                next.error = None;
            }
            ChatAction::Open(id) if next.running.is_none() => {
                if let Some(c) = next.conversations.iter().find(|c| c.id == id) {
                    next.turns = restore(c);
                    next.current = id;
                    next.answer = AnswerRecord::default();
                }
            }
            ChatAction::NewChat | ChatAction::Open(_) => {}
            ChatAction::Regenerate { id } => {
                if let Some(last) = next.turns.last_mut() {
                    last.text.clear();
                }
                next.running = Some(id);
                next.error = None;
                next.answer = AnswerRecord::default();
                next.store_current();
            }
        }
        Rc::new(next)
    }
}

fn restore(c: &Conversation) -> Vec<Turn> {
    c.turns
        .iter()
        .map(|t| Turn { role: if t.role == "user" { Role::User } else { Role::Assistant }, text: t.text.clone() })
        .collect()
}

impl ChatState {
    /// Puts the conversation on screen into `conversations` (as the newest) to be saved.
    fn store_current(&mut self) {
        if self.current.is_empty() {
            self.current = now_id();
        }
        let title = self.turns.first().map(|t| t.text.chars().take(60).collect()).unwrap_or_default();
        let turns = self.turns.iter().map(|t| StoredTurn { role: t.role.as_str().into(), text: t.text.clone() }).collect();
        self.conversations.retain(|c| c.id != self.current);
        self.conversations.push(Conversation { id: self.current.clone(), title, turns });
        self.unsaved += 1;
    }

    fn apply(&mut self, event: EngineEvent) {
        let for_running = self.running == Some(event.id());
        match event {
            EngineEvent::Status { id, status } => {
                if id == 0 {
                    self.connected = true;
                }
                self.model_line = format!("{} · {}", model_name(status.model.as_deref()), status.backend.label());
            }
            EngineEvent::LoadProgress { stage, done, total, .. } => {
                let percent = (done * 100).checked_div(total).map(|p| format!(" {p}%")).unwrap_or_default();
                self.activity = match stage {
                    LoadStage::Download => format!("Downloading model…{percent}"),
                    LoadStage::Parse => "Reading model…".to_string(),
                    LoadStage::Upload => format!("Loading weights…{percent}"),
                };
            }
            EngineEvent::Loaded { model, backend, load_ms, fallback, .. } => {
                self.model_line = format!("{} · {}", model_name(Some(&model)), backend.label());
                self.activity = format!("loaded in {:.1} s", load_ms / 1000.0);
                self.fallback = fallback;
            }
            EngineEvent::Token { token_id, text, .. } if for_running => {
                self.answer.streamed_ids.push(token_id);
                if let Some(turn) = self.turns.last_mut() {
                    turn.text.push_str(&text);
                }
            }
            EngineEvent::Done { stop_reason, generated_ids, decode_tok_per_s, .. } if for_running => {
                self.running = None;
                // A Stop before the first decoded token (e.g. during the load) has no speed to show.
                self.activity = match (stop_reason.as_str(), generated_ids.is_empty()) {
                    ("cancelled", true) => "stopped".to_string(),
                    ("cancelled", false) => format!("stopped · {decode_tok_per_s:.2} tok/s"),
                    _ => format!("{decode_tok_per_s:.2} tok/s"),
                };
                self.answer.generated_ids = generated_ids;
                self.answer.stop_reason = Some(stop_reason);
            }
            EngineEvent::Error { message, .. } => {
                if for_running {
                    self.running = None;
                }
                self.error = Some(message);
            }
            EngineEvent::Token { .. } | EngineEvent::Done { .. } => {} // for an older request
            EngineEvent::Attached { id, generation: Some(generation) } => self.attach(id, generation),
            EngineEvent::Attached { generation: None, .. } => {}
            EngineEvent::Models { models, .. } => {
                let wanted = self.settings.as_ref().map(|s| s.model_id.clone()).unwrap_or_else(|| Settings::default().model_id);
                self.model_ready = Some(models.iter().any(|m| m.id == wanted && m.state == ModelState::Ready));
            }
            EngineEvent::DownloadProgress { .. } => {} // options page events
        }
    }

    /// Shows a generation that was running before this popup opened (request `id` now follows
    /// it): its conversation, the answer so far, then its live tokens.
    fn attach(&mut self, id: RequestId, generation: GenerationSnapshot) {
        if self.running.is_some() {
            return;
        }
        let stored = generation.conversation.as_ref().and_then(|c| self.conversations.iter().find(|x| &x.id == c));
        if let Some(conversation) = stored {
            self.turns = restore(conversation);
            self.current = conversation.id.clone();
        }
        match self.turns.last_mut() {
            Some(turn) if turn.role == Role::Assistant => turn.text = generation.text,
            _ => self.turns.push(Turn { role: Role::Assistant, text: generation.text }),
        }
        self.running = Some(id);
        self.error = None;
        self.answer = AnswerRecord { streamed_ids: generation.token_ids, ..AnswerRecord::default() };
    }

    /// The conversation as the model sees it: system prompt, then every finished turn.
    fn messages_with(&self, question: &str) -> Vec<Message> {
        let mut messages = Vec::new();
        if let Some(system) = self.settings.as_ref().map(|s| s.system_prompt.trim()).filter(|s| !s.is_empty()) {
            messages.push(Message { role: "system".into(), content: system.to_string() });
        }
        for turn in &self.turns {
            messages.push(Message { role: turn.role.as_str().into(), content: turn.text.clone() });
        }
        messages.push(Message { role: "user".into(), content: question.to_string() });
        messages
    }
}

fn model_name(id: Option<&str>) -> String {
    match id {
        Some(id) => catalog_entry(id).map_or_else(|| id.to_string(), |entry| entry.name.to_string()),
        None => "No model loaded".to_string(),
    }
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

/// Starts the engine (via the service worker) and connects to it; events go to `dispatch`.
async fn connect(link: Rc<RefCell<EngineLink>>, dispatch: UseReducerDispatcher<ChatState>) -> Result<(), String> {
    let settings = settings::load().await.map_err(|e| e.to_string())?;
    dispatch.dispatch(ChatAction::SettingsLoaded(settings));
    match history::load().await {
        Ok(conversations) => dispatch.dispatch(ChatAction::HistoryLoaded(conversations)),
        Err(e) => dispatch.dispatch(ChatAction::Failed(format!("Cannot read the conversation history: {e}"))),
    }

    let ensure = to_js(&ServiceWorkerRequest::EnsureEngine { id: 1 }).map_err(|e| js_error_text(&e))?;
    let reply = runtime_send_message(&ensure).await.map_err(|e| js_error_text(&e))?;
    match from_js::<ServiceWorkerReply>(reply).map_err(|e| js_error_text(&e))? {
        ServiceWorkerReply::EngineReady { .. } | ServiceWorkerReply::Saved { .. } => {}
        ServiceWorkerReply::Error { message, .. } => return Err(message),
    }

    let info = js_sys::Object::new();
    js_sys::Reflect::set(&info, &"name".into(), &ENGINE_PORT.into()).map_err(|e| js_error_text(&e))?;
    let port = runtime_connect(&info);
    let on_event_dispatch = dispatch.clone();
    let on_event_link = link.clone();
    let on_event = Closure::<dyn Fn(JsValue)>::new(move |message: JsValue| match from_js::<EngineEvent>(message) {
        Ok(event) => {
            let greeting = matches!(event, EngineEvent::Status { id: 0, .. });
            on_event_dispatch.dispatch(ChatAction::Engine(event));
            if greeting {
                // Re-attach to a generation still running (this popup was closed and reopened),
                // and find out whether the selected model is ready (first run).
                let mut link = on_event_link.borrow_mut();
                let requests: [fn(RequestId) -> EngineRequest; 2] = [|id| EngineRequest::Attach { id }, |id| EngineRequest::ListModels { id }];
                for request in requests {
                    if let Err(message) = link.send(request) {
                        on_event_dispatch.dispatch(ChatAction::Failed(message));
                    }
                }
            }
        }
        Err(e) => on_event_dispatch.dispatch(ChatAction::Failed(js_error_text(&e))),
    });
    port.on_message().add_listener(on_event.as_ref().unchecked_ref());
    let on_disconnect = Closure::<dyn Fn()>::new(move || dispatch.dispatch(ChatAction::Disconnected));
    port.on_disconnect().add_listener(on_disconnect.as_ref().unchecked_ref());
    // The popup lives as long as its one port.
    on_event.forget();
    on_disconnect.forget();
    link.borrow_mut().port = Some(port);
    Ok(())
}

#[function_component(ChatApp)]
pub fn chat_app() -> Html {
    let state = use_reducer(ChatState::default);
    let link = use_mut_ref(EngineLink::default);
    let draft = use_state(String::new);

    {
        let link = link.clone();
        let dispatch = state.dispatcher();
        use_effect_with((), move |_| {
            spawn_local(async move {
                if let Err(message) = connect(link, dispatch.clone()).await {
                    dispatch.dispatch(ChatAction::Failed(format!("Cannot start the engine: {message}")));
                }
            });
        });
    }

    {
        let conversations = state.conversations.clone();
        let dispatch = state.dispatcher();
        use_effect_with(state.unsaved, move |unsaved| {
            if *unsaved > 0 {
                spawn_local(async move {
                    if let Err(e) = history::save(&conversations).await {
                        dispatch.dispatch(ChatAction::Failed(format!("Cannot save the conversation: {e}")));
                    }
                });
            }
        });
    }

    let on_new_chat = {
        let dispatch = state.dispatcher();
        Callback::from(move |_: MouseEvent| dispatch.dispatch(ChatAction::NewChat))
    };
    let on_open = {
        let dispatch = state.dispatcher();
        Callback::from(move |e: Event| dispatch.dispatch(ChatAction::Open(e.target_unchecked_into::<web_sys::HtmlSelectElement>().value())))
    };

    let on_input = {
        let draft = draft.clone();
        Callback::from(move |e: InputEvent| draft.set(e.target_unchecked_into::<HtmlTextAreaElement>().value()))
    };

    let on_send = {
        let state = state.clone();
        let link = link.clone();
        let draft = draft.clone();
        Callback::from(move |_: MouseEvent| {
            let question = draft.trim().to_string();
            let Some(settings) = state.settings.clone() else { return };
            if question.is_empty() || state.running.is_some() {
                return;
            }
            let messages = state.messages_with(&question);
            let conversation = if state.current.is_empty() { now_id() } else { state.current.clone() };
            let sent = link.borrow_mut().send(|id| EngineRequest::Chat {
                id,
                model: settings.model_ref(),
                messages,
                options: ChatOptions { backend: settings.backend, ..settings.chat.clone() },
                conversation: Some(conversation.clone()),
            });
            match sent {
                Ok(id) => {
                    state.dispatch(ChatAction::Asked { id, text: question, conversation });
                    draft.set(String::new());
                }
                Err(message) => state.dispatch(ChatAction::Failed(message)),
            }
        })
    };

    // Regenerate: ask the last question again in place of its answer.
    let on_regenerate = {
        let state = state.clone();
        let link = link.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(settings) = state.settings.clone() else { return };
            if state.running.is_some() || state.turns.len() < 2 {
                return;
            }
            let question = state.turns[state.turns.len() - 2].text.clone();
            let mut earlier = (*state).clone();
            earlier.turns.truncate(earlier.turns.len() - 2);
            let messages = earlier.messages_with(&question);
            let sent = link.borrow_mut().send(|id| EngineRequest::Chat {
                id,
                model: settings.model_ref(),
                messages,
                options: ChatOptions { backend: settings.backend, ..settings.chat.clone() },
                conversation: Some(state.current.clone()),
            });
            match sent {
                Ok(id) => state.dispatch(ChatAction::Regenerate { id }),
                Err(message) => state.dispatch(ChatAction::Failed(message)),
            }
        })
    };

    let on_stop = {
        let state = state.clone();
        let link = link.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(target) = state.running {
                if let Err(message) = link.borrow_mut().send(|id| EngineRequest::Stop { id, target }) {
                    state.dispatch(ChatAction::Failed(message));
                }
            }
        })
    };

    let on_models = Callback::from(|_: MouseEvent| {
        spawn_local(async {
            let _ = runtime_open_options_page().await;
        })
    });
    let on_recheck = {
        let state = state.clone();
        let link = link.clone();
        Callback::from(move |_: MouseEvent| {
            if let Err(message) = link.borrow_mut().send(|id| EngineRequest::ListModels { id }) {
                state.dispatch(ChatAction::Failed(message));
            }
        })
    };
    let first_run = state.model_ready == Some(false) && state.running.is_none();
    let selected_model = model_name(state.settings.as_ref().map(|s| s.model_id.as_str()));
    let answer_text = state.turns.last().filter(|t| t.role == Role::Assistant).map(|t| t.text.clone()).unwrap_or_default();

    let status_line = match (state.connected, state.activity.is_empty()) {
        (false, _) => "Starting the engine…".to_string(),
        (true, true) => state.model_line.clone(),
        (true, false) => format!("{} · {}", state.model_line, state.activity),
    };
    let ids = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let answer_state = match (&state.running, &state.answer.stop_reason) {
        (Some(_), _) => "running",
        (None, Some(_)) => "done",
        (None, None) => "idle",
    };

    html! {
        <div class="chat">
            <div class={classes!("status", state.error.as_ref().map(|_| "error"))} id="status">
                <button class="link" onclick={on_models.clone()}>{ "Models…" }</button>
                <span id="status-text">{ state.error.clone().unwrap_or(status_line) }</span>
                if let Some(note) = &state.fallback {
                    <div id="backend-note" class="note">{ note }</div>
                }
            </div>
            if first_run {
                <div class="first-run" id="first-run">
                    <h2>{ "Welcome to QWGLM" }</h2>
                    <p>{ "QWGLM answers with a language model that runs on this computer, so a model has to be downloaded once before the first chat." }</p>
                    <p>{ format!("The selected model, {selected_model}, is not downloaded yet. Pick one on the options page and press Download (SmolLM2 135M is about 100 MB).") }</p>
                    <button id="open-options" class="primary" onclick={on_models.clone()}>{ "Choose and download a model…" }</button>
                    <button id="recheck" onclick={on_recheck}>{ "Check again" }</button>
                </div>
            } else { <>
            <div class="history">
                <select id="conversations" onchange={on_open} disabled={state.running.is_some()}>
                    if !state.conversations.iter().any(|c| c.id == state.current) {
                        <option value={state.current.clone()} selected=true>{ "New conversation" }</option>
                    }
                    { for state.conversations.iter().rev().map(|c| html! {
                        <option value={c.id.clone()} selected={c.id == state.current}>{ if c.title.is_empty() { "(empty)".to_string() } else { c.title.clone() } }</option>
                    }) }
                </select>
                <button id="new-chat" onclick={on_new_chat} disabled={state.running.is_some()}>{ "New chat" }</button>
            </div>
            <div class="turns" id="turns">
                { for state.turns.iter().enumerate().map(|(i, turn)| {
                    let last_answer = turn.role == Role::Assistant && i + 1 == state.turns.len() && state.running.is_none();
                    let copy_text = turn.text.clone();
                    let on_copy = Callback::from(move |_: MouseEvent| copy_to_clipboard(&copy_text));
                    html! { <>
                        <div class={classes!("turn", turn.role.as_str())}>
                            if turn.role == Role::Assistant { { render_markdown(&turn.text) } } else { { &turn.text } }
                        </div>
                        if turn.role == Role::Assistant && !turn.text.is_empty() {
                            <div class="turn-actions">
                                <button class="copy" onclick={on_copy}>{ "Copy" }</button>
                                if last_answer {
                                    <button id="regenerate" onclick={on_regenerate.clone()}>{ "Regenerate" }</button>
                                }
                            </div>
                        }
                    </> }
                }) }
            </div>
            <div id="last-answer" hidden=true
                data-state={answer_state}
                data-stop-reason={state.answer.stop_reason.clone().unwrap_or_default()}
                data-streamed-ids={ids(&state.answer.streamed_ids)}
                data-generated-ids={ids(&state.answer.generated_ids)}
                data-text={answer_text} />
            <div class="composer">
                <textarea id="prompt" placeholder="Ask anything…" value={(*draft).clone()} oninput={on_input} />
                if state.running.is_some() {
                    <button id="stop" onclick={on_stop}>{ "Stop" }</button>
                } else {
                    <button id="send" onclick={on_send} disabled={!state.connected}>{ "Send" }</button>
                }
            </div>
            </> }
        </div>
    }
}

/// An answer as markdown (code blocks, paragraphs, inline code/bold/italic), built from text
/// nodes only: nothing the model writes is interpreted as HTML.
fn render_markdown(text: &str) -> Html {
    use crate::markdown::{parse, Block, Inline};
    parse(text)
        .into_iter()
        .map(|block| match block {
            Block::Code { lang, text } => html! {
                <pre class="code" data-lang={lang}><code>{ text }</code></pre>
            },
            Block::Paragraph(spans) => html! {
                <p>{ for spans.into_iter().map(|span| match span {
                    Inline::Text(t) => html! { { t } },
                    Inline::Code(t) => html! { <code>{ t }</code> },
                    Inline::Bold(t) => html! { <strong>{ t }</strong> },
                    Inline::Italic(t) => html! { <em>{ t }</em> },
                }) }</p>
            },
        })
        .collect::<Html>()
}

fn copy_to_clipboard(text: &str) {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or(JsValue::UNDEFINED);
    let clipboard = js_sys::Reflect::get(&navigator, &"clipboard".into()).ok();
    if let Some(clipboard) = clipboard.filter(|c| !c.is_undefined()) {
        if let Ok(write) = js_sys::Reflect::get(&clipboard, &"writeText".into()).and_then(|f| f.dyn_into::<js_sys::Function>()) {
            let _ = write.call1(&clipboard, &JsValue::from_str(text));
        }
    }
}
