//! The offscreen document's part: it starts the engine worker (`engine-worker.js`, where
//! [`crate::EngineWorker`] runs) and relays between the client pages' `runtime.Port`s and that
//! worker, because a worker has no `chrome.*` APIs. Each port gets a [`ClientId`]; its requests go
//! to the worker tagged with it, the worker's events come back tagged with it and go out on that
//! port only, and the port's disconnect is forwarded. The worker's messages for the service
//! worker (`SaveAnswer`) go out with `runtime.sendMessage`.
//!
//! Nothing heavy runs here, so the renderer main thread that the popup shares stays free.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::chrome::{from_js, js_error_text, runtime_send_message, to_js, Port};
use crate::error::{ExtensionError, Result};
use crate::protocol::{ClientId, EngineEvent, EngineRequest, RelayToWorker, WorkerToRelay, ENGINE_PORT};

#[wasm_bindgen]
extern "C" {
    // Own bindings for the dedicated worker rather than web-sys features: a new web-sys feature
    // rebuilds every crate that depends on web-sys (wgpu, the engine, ...).

    /// `Worker`, the engine's dedicated worker as the offscreen document sees it.
    #[wasm_bindgen(js_name = Worker)]
    pub(crate) type DedicatedWorker;
    /// `new Worker(url, options)`.
    #[wasm_bindgen(constructor, catch, js_class = Worker)]
    pub(crate) fn new(url: &str, options: &JsValue) -> Result<DedicatedWorker, JsValue>;
    #[wasm_bindgen(method, catch, js_class = Worker, js_name = postMessage)]
    pub(crate) fn post_message(this: &DedicatedWorker, message: &JsValue) -> Result<(), JsValue>;
    #[wasm_bindgen(method, setter, js_class = Worker, js_name = onmessage)]
    pub(crate) fn set_onmessage(this: &DedicatedWorker, listener: &js_sys::Function);
    #[wasm_bindgen(method, setter, js_class = Worker, js_name = onerror)]
    pub(crate) fn set_onerror(this: &DedicatedWorker, listener: &js_sys::Function);

    /// The global `postMessage` of a dedicated worker's scope: to the page that started it.
    #[wasm_bindgen(catch, js_name = postMessage)]
    pub(crate) fn post_to_parent(message: &JsValue) -> Result<(), JsValue>;
}

/// The engine worker's script, next to the offscreen document.
const WORKER_SCRIPT: &str = "engine-worker.js";

/// `new Worker`'s options: a module worker (wasm-bindgen's `--target web` glue is an ES module).
#[derive(serde::Serialize)]
struct WorkerOptions {
    r#type: &'static str,
    name: &'static str,
}

#[derive(Default)]
struct RelayState {
    ports: RefCell<HashMap<ClientId, Port>>,
    next_client: Cell<ClientId>,
}

impl RelayState {
    /// Posts an event on a client's port; a port that is gone (its page closed) is skipped.
    fn send(&self, client: ClientId, event: &EngineEvent) {
        let ports = self.ports.borrow();
        let Some(port) = ports.get(&client) else { return };
        match to_js(event) {
            Ok(value) => {
                let _ = port.post_message(&value);
            }
            Err(e) => web_sys::console::error_1(&e),
        }
    }
}

#[wasm_bindgen]
pub struct EngineRelay {
    state: Rc<RelayState>,
    worker: Rc<DedicatedWorker>,
}

#[wasm_bindgen]
impl EngineRelay {
    /// Starts the engine worker.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Result<EngineRelay, JsValue> {
        crate::install_panic_hook();
        let state: Rc<RelayState> = Rc::default();
        let worker = DedicatedWorker::new(WORKER_SCRIPT, &to_js(&WorkerOptions { r#type: "module", name: "qwglm-engine" })?)?;

        let on_message_state = state.clone();
        let on_message = Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            match from_js::<WorkerToRelay>(event.data()) {
                Ok(WorkerToRelay::Event { client, event }) => on_message_state.send(client, &event),
                Ok(WorkerToRelay::ToServiceWorker { request }) => spawn_local(async move {
                    let outcome = match to_js(&request) {
                        Ok(message) => runtime_send_message(&message).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = outcome {
                        web_sys::console::error_1(&format!("qwglm: the service worker did not take a message: {}", js_error_text(&e)).into());
                    }
                }),
                Err(e) => web_sys::console::error_1(&format!("qwglm relay: {}", js_error_text(&e)).into()),
            }
        });
        worker.set_onmessage(on_message.as_ref().unchecked_ref());
        on_message.forget();

        // An uncaught error in the worker (a bug: a panic, a failed module load) reaches every page
        // as an error event, so none waits silently.
        let on_error_state = state.clone();
        let on_error = Closure::<dyn Fn(JsValue)>::new(move |event: JsValue| {
            let detail = js_sys::Reflect::get(&event, &"message".into()).ok().and_then(|m| m.as_string());
            let message = format!("the engine worker failed: {}", detail.unwrap_or_else(|| "it could not start".into()));
            web_sys::console::error_1(&message.clone().into());
            let clients: Vec<ClientId> = on_error_state.ports.borrow().keys().copied().collect();
            for client in clients {
                on_error_state.send(client, &EngineEvent::Error { id: 0, message: message.clone() });
            }
        });
        worker.set_onerror(on_error.as_ref().unchecked_ref());
        on_error.forget();

        Ok(EngineRelay { state, worker: Rc::new(worker) })
    }

    /// Serves a port from `runtime.onConnect` (ports with another name are not ours). The worker
    /// greets it (`Status` with id 0) once it has registered the client.
    pub fn attach(&self, port: Port) -> Result<(), JsValue> {
        if port.name() != ENGINE_PORT {
            return Ok(());
        }
        let client = self.state.next_client.get().wrapping_add(1);
        self.state.next_client.set(client);

        let on_request_worker = self.worker.clone();
        let on_request_state = self.state.clone();
        let on_request = Closure::<dyn Fn(JsValue)>::new(move |message: JsValue| match from_js::<EngineRequest>(message) {
            Ok(request) => {
                if let Err(e) = post(&on_request_worker, &RelayToWorker::Request { client, request }) {
                    on_request_state.send(client, &EngineEvent::Error { id: 0, message: e.to_string() });
                }
            }
            Err(e) => on_request_state.send(client, &EngineEvent::Error { id: 0, message: js_error_text(&e) }),
        });
        port.on_message().add_listener(on_request.as_ref().unchecked_ref());

        let on_disconnect_worker = self.worker.clone();
        let on_disconnect_state = self.state.clone();
        let on_disconnect = Closure::<dyn Fn()>::new(move || {
            on_disconnect_state.ports.borrow_mut().remove(&client);
            if let Err(e) = post(&on_disconnect_worker, &RelayToWorker::Disconnect { client }) {
                web_sys::console::error_1(&e.to_string().into());
            }
        });
        port.on_disconnect().add_listener(on_disconnect.as_ref().unchecked_ref());

        // The listeners live as long as the port; ports are few, so leaking the closures is fine.
        on_request.forget();
        on_disconnect.forget();

        self.state.ports.borrow_mut().insert(client, port);
        post(&self.worker, &RelayToWorker::Connect { client })?;
        Ok(())
    }
}

fn post(worker: &DedicatedWorker, message: &RelayToWorker) -> Result<()> {
    let value = to_js(message).map_err(ExtensionError::browser)?;
    worker.post_message(&value).map_err(ExtensionError::browser)
}
