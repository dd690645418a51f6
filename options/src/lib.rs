//! QWGLM options page (model manager: download, resume, cancel, delete, storage usage, import of
//! a local GGUF file; settings) as a Yew wasm module: `options.js` calls [`start_options`].
//!
//! Shares its sources with the popup by `#[path]`, not by crate dependencies: a dependency's
//! `#[wasm_bindgen]` exports would land in this module (see docs/EXTENSION.md).

#[cfg(target_arch = "wasm32")]
mod app {
    #[path = "../../../extension/src/chrome.rs"]
    pub mod chrome;
    #[path = "../../../extension/src/protocol.rs"]
    #[allow(dead_code)] // shared; the options page uses the client half
    pub mod protocol;
    #[path = "../../../popup/src/app/settings.rs"]
    pub mod settings;

    pub mod options;
}

/// Page error and mounting, shared with the popup crate.
#[path = "../../popup/src/page.rs"]
pub mod page;

pub use page::PageError;

#[cfg(target_arch = "wasm32")]
pub use wasm::start_options;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    pub fn start_options() -> Result<(), JsValue> {
        crate::page::mount::<crate::app::options::OptionsApp>("options")
    }
}
