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
    #[error("model store: {0}")]
    Store(String),
    #[error("not enough storage for this model: {} needed, {} available. Delete a model in the options page or free disk space.", mb(*.needed), mb(*.available))]
    QuotaExceeded { needed: u64, available: u64 },
    #[error("{file} failed verification {MAX} times (sha256 {found}, expected {expected}); it was not marked ready", MAX = 3)]
    HashMismatch { file: String, expected: String, found: String },
    #[error("no sha256 is known for {file} (neither the catalog nor the host's LFS metadata gives one), so it cannot be verified")]
    NoExpectedHash { file: String },
    #[error("download cancelled")]
    Cancelled,
    #[error("{file} was not imported: {reason}. Nothing was marked ready.")]
    ImportRejected { file: String, reason: String },
    #[error("{0} is not a catalog model")]
    UnknownModel(String),
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl From<idb::Error> for ExtensionError {
    fn from(err: idb::Error) -> Self {
        let text = err.to_string();
        // IndexedDB reports a full disk or origin quota as QuotaExceededError.
        if text.contains("QuotaExceeded") {
            return Self::QuotaExceeded { needed: 0, available: 0 };
        }
        Self::Store(text)
    }
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
