use wasm_bindgen::JsValue;

use crate::chrome::js_error_text;

/// Every failure of the extension runtime; shown to the user as its message.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error("{0}")]
    Engine(#[from] engine::EngineError),
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("the engine is busy with another request; wait for it or press stop")]
    Busy,
    #[error("browser API failed: {0}")]
    Browser(String),
    #[error("unexpected message: {0}")]
    Protocol(String),
}

impl ExtensionError {
    pub fn browser(value: JsValue) -> Self {
        Self::Browser(js_error_text(&value))
    }
}

impl From<ExtensionError> for JsValue {
    fn from(err: ExtensionError) -> Self {
        js_sys::Error::new(&err.to_string()).into()
    }
}

pub type Result<T, E = ExtensionError> = std::result::Result<T, E>;
