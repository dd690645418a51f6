//! Settings in `chrome.storage.local`. Shared by `#[path]` with the options crate.

use wasm_bindgen::JsValue;

use super::chrome::{from_js, js_error_text, storage_local_get, storage_local_set, to_js};
use super::protocol::{Settings, SETTINGS_KEY};
use crate::page::PageError;

/// The stored settings; defaults for anything missing (first run, older versions).
pub async fn load() -> Result<Settings, PageError> {
    let items = storage_local_get(SETTINGS_KEY).await.map_err(|e| PageError::Browser(js_error_text(&e)))?;
    let stored = js_sys::Reflect::get(&items, &SETTINGS_KEY.into()).unwrap_or(JsValue::UNDEFINED);
    if stored.is_undefined() || stored.is_null() {
        return Ok(Settings::default());
    }
    from_js(stored).map_err(|e| PageError::Browser(js_error_text(&e)))
}

pub async fn save(settings: &Settings) -> Result<(), PageError> {
    let items = js_sys::Object::new();
    let value = to_js(settings).map_err(|e| PageError::Browser(js_error_text(&e)))?;
    js_sys::Reflect::set(&items, &SETTINGS_KEY.into(), &value).map_err(|e| PageError::Browser(js_error_text(&e)))?;
    storage_local_set(&items).await.map_err(|e| PageError::Browser(js_error_text(&e)))?;
    Ok(())
}
