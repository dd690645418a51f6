//! QWGLM popup (chat) and options page (models, settings) as one Yew wasm module:
//! `popup.js` calls [`start_popup`], `options.js` calls [`start_options`].

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
    pub mod options;
    pub mod settings;
}

/// Answer formatting (pure; unit-tested natively).
pub mod markdown;

#[cfg(target_arch = "wasm32")]
pub use wasm::{start_options, start_popup};

/// Failures of the pages themselves (engine failures arrive as protocol `Error` events).
#[derive(Debug, thiserror::Error)]
pub enum PopupError {
    #[error("the page has no #app element to mount into")]
    NoMountPoint,
    #[error("browser API failed: {0}")]
    Browser(String),
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use wasm_bindgen::prelude::*;
    use yew::BaseComponent;

    use crate::PopupError;

    fn mount<App: BaseComponent<Properties = ()>>() -> Result<(), JsValue> {
        std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("qwglm popup panic: {info}").into())));
        let root = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("app"))
            .ok_or(PopupError::NoMountPoint)
            .map_err(|e| JsValue::from(js_sys::Error::new(&e.to_string())))?;
        yew::Renderer::<App>::with_root(root).render();
        Ok(())
    }

    #[wasm_bindgen]
    pub fn start_popup() -> Result<(), JsValue> {
        mount::<crate::app::chat::ChatApp>()
    }

    #[wasm_bindgen]
    pub fn start_options() -> Result<(), JsValue> {
        mount::<crate::app::options::OptionsApp>()
    }
}
