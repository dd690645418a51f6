//! What both pages (popup and options) need around their Yew app: the page error type and
//! mounting. Shared by `#[path]` with the options crate (see docs/EXTENSION.md), so one source.

/// Failures of the pages themselves (engine failures arrive as protocol `Error` events).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the page has no #app element to mount into")]
    NoMountPoint,
    #[error("browser API failed: {0}")]
    Browser(String),
}

/// Mounts `App` into the page's `#app` element; panics go to the console, tagged with `page`.
#[cfg(target_arch = "wasm32")]
pub fn mount<App: yew::BaseComponent<Properties = ()>>(page: &'static str) -> Result<(), wasm_bindgen::JsValue> {
    std::panic::set_hook(Box::new(move |info| web_sys::console::error_1(&format!("qwglm {page} panic: {info}").into())));
    let root = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("app"))
        .ok_or(PageError::NoMountPoint)
        .map_err(|e| wasm_bindgen::JsValue::from(js_sys::Error::new(&e.to_string())))?;
    yew::Renderer::<App>::with_root(root).render();
    Ok(())
}
