//! The service worker's part: it owns the offscreen document's lifecycle and nothing else. It
//! holds no model state and is not on the token stream (clients talk to the engine host over a
//! Port), so its being stopped and restarted by the browser loses nothing.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::chrome::{
    from_js, js_error_text, offscreen_create_document, runtime_get_contexts, runtime_get_url, storage_local_get, storage_local_set, to_js,
};
use crate::error::{ExtensionError, Result};
use crate::protocol::{Conversation, ServiceWorkerReply, ServiceWorkerRequest, HISTORY_KEY};

const OFFSCREEN_PAGE: &str = "offscreen.html";

#[wasm_bindgen]
pub struct ServiceWorkerHost {
    /// The `createDocument` promise while a creation is in flight: concurrent requests await it
    /// instead of creating a second document (which the browser rejects).
    creating: Rc<RefCell<Option<js_sys::Promise>>>,
}

#[wasm_bindgen]
impl ServiceWorkerHost {
    #[wasm_bindgen(constructor)]
    pub fn new() -> ServiceWorkerHost {
        crate::install_panic_hook();
        ServiceWorkerHost { creating: Rc::default() }
    }

    /// Answers one `runtime.sendMessage`; the promise always resolves to a `ServiceWorkerReply`.
    pub fn on_message(&self, message: JsValue) -> js_sys::Promise {
        let creating = self.creating.clone();
        future_to_promise(async move {
            let reply = match from_js::<ServiceWorkerRequest>(message) {
                Ok(ServiceWorkerRequest::EnsureEngine { id }) => match ensure_offscreen(&creating).await {
                    Ok(()) => ServiceWorkerReply::EngineReady { id },
                    Err(e) => ServiceWorkerReply::Error { id, message: e.to_string() },
                },
                Ok(ServiceWorkerRequest::SaveAnswer { id, conversation, text }) => match save_answer(&conversation, &text).await {
                    Ok(()) => ServiceWorkerReply::Saved { id },
                    Err(e) => ServiceWorkerReply::Error { id, message: e.to_string() },
                },
                Err(e) => ServiceWorkerReply::Error { id: 0, message: ExtensionError::Protocol(js_error_text(&e)).to_string() },
            };
            to_js(&reply)
        })
    }
}

impl Default for ServiceWorkerHost {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextFilter {
    context_types: [&'static str; 1],
    document_urls: [String; 1],
}

#[derive(Serialize)]
struct CreateDocument {
    url: &'static str,
    reasons: [&'static str; 1],
    justification: &'static str,
}

async fn ensure_offscreen(creating: &RefCell<Option<js_sys::Promise>>) -> Result<()> {
    let filter = ContextFilter { context_types: ["OFFSCREEN_DOCUMENT"], document_urls: [runtime_get_url(OFFSCREEN_PAGE)] };
    let contexts = runtime_get_contexts(&to_js(&filter).map_err(ExtensionError::browser)?).await.map_err(ExtensionError::browser)?;
    if js_sys::Array::from(&contexts).length() > 0 {
        return Ok(());
    }
    let pending = creating.borrow().clone();
    let promise = match pending {
        Some(p) => p,
        None => {
            let params = CreateDocument {
                url: OFFSCREEN_PAGE,
                reasons: ["WORKERS"],
                justification: "Runs the local language model (wasm, WebGPU) outside the service worker",
            };
            let p = offscreen_create_document(&to_js(&params).map_err(ExtensionError::browser)?);
            *creating.borrow_mut() = Some(p.clone());
            p
        }
    };
    let created = JsFuture::from(promise).await;
    creating.borrow_mut().take();
    created.map(|_| ()).map_err(ExtensionError::browser)
}

/// Writes `text` as the answer (last assistant turn) of stored conversation `id`.
async fn save_answer(id: &str, text: &str) -> Result<()> {
    let items = storage_local_get(HISTORY_KEY).await.map_err(ExtensionError::browser)?;
    let stored = js_sys::Reflect::get(&items, &HISTORY_KEY.into()).map_err(ExtensionError::browser)?;
    let mut conversations: Vec<Conversation> =
        if stored.is_undefined() || stored.is_null() { Vec::new() } else { from_js(stored).map_err(ExtensionError::browser)? };
    let conversation = conversations
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| ExtensionError::Protocol(format!("no stored conversation {id} to save the answer into")))?;
    conversation.set_answer(text);
    let update = js_sys::Object::new();
    let value = to_js(&conversations).map_err(ExtensionError::browser)?;
    js_sys::Reflect::set(&update, &HISTORY_KEY.into(), &value).map_err(ExtensionError::browser)?;
    storage_local_set(&update).await.map_err(ExtensionError::browser)?;
    Ok(())
}
