//! Conversation history in `chrome.storage.local` (key `conversations`), newest last.

use wasm_bindgen::JsValue;

use super::chrome::{from_js, js_error_text, storage_local_get, storage_local_set, to_js};
use crate::page::PageError;

pub use super::protocol::{Conversation, StoredTurn, HISTORY_KEY, MAX_CONVERSATIONS};

pub async fn load() -> Result<Vec<Conversation>, PageError> {
    let items = storage_local_get(HISTORY_KEY).await.map_err(|e| PageError::Browser(js_error_text(&e)))?;
    let stored = js_sys::Reflect::get(&items, &HISTORY_KEY.into()).unwrap_or(JsValue::UNDEFINED);
    if stored.is_undefined() || stored.is_null() {
        return Ok(Vec::new());
    }
    from_js(stored).map_err(|e| PageError::Browser(js_error_text(&e)))
}

pub async fn save(conversations: &[Conversation]) -> Result<(), PageError> {
    let start = conversations.len().saturating_sub(MAX_CONVERSATIONS);
    let items = js_sys::Object::new();
    let value = to_js(&conversations[start..].to_vec()).map_err(|e| PageError::Browser(js_error_text(&e)))?;
    js_sys::Reflect::set(&items, &HISTORY_KEY.into(), &value).map_err(|e| PageError::Browser(js_error_text(&e)))?;
    storage_local_set(&items).await.map_err(|e| PageError::Browser(js_error_text(&e)))?;
    Ok(())
}
