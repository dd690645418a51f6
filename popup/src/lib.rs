//! QWGLM popup (chat) as a Yew wasm module: `popup.js` calls [`start_popup`]. The options page
//! is its own crate (`options/`, qwglm-options) and wasm module.

#[cfg(target_arch = "wasm32")]
mod app {
    // One source for the protocol and the chrome bindings in every context. Compiled in rather than
    // a crate dependency: the extension crate's wasm exports would otherwise land in this module.
    #[path = "../../../extension/src/chrome.rs"]
    pub mod chrome;
    #[path = "../../../extension/src/protocol.rs"]
    #[allow(dead_code)] // shared; the popup uses the client half
    pub mod protocol;

    pub mod chat;
    pub mod history;
    #[allow(dead_code)] // shared with the options page, which also saves
    pub mod settings;
}

/// Answer formatting (pure; unit-tested natively).
pub mod markdown;
/// Page error and mounting, shared with the options crate.
pub mod page;

pub use page::PageError;

#[cfg(target_arch = "wasm32")]
pub use wasm::start_popup;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    pub fn start_popup() -> Result<(), JsValue> {
        crate::page::mount::<crate::app::chat::ChatApp>("popup")
    }
}
