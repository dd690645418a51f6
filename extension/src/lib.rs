//! QWGLM extension runtime (wasm32): the service worker host, the offscreen document's relay and
//! the engine host in its dedicated worker.
//! The message protocol is target-independent (and unit-tested natively).

pub mod protocol;

#[cfg(target_arch = "wasm32")]
mod chrome;
#[cfg(target_arch = "wasm32")]
mod download;
#[cfg(target_arch = "wasm32")]
mod engine_host;
#[cfg(target_arch = "wasm32")]
mod import;
#[cfg(target_arch = "wasm32")]
mod relay;
#[cfg(target_arch = "wasm32")]
mod store;
#[cfg(target_arch = "wasm32")]
mod error;
#[cfg(target_arch = "wasm32")]
mod service_worker;
#[cfg(target_arch = "wasm32")]
mod yielding;

#[cfg(target_arch = "wasm32")]
pub use engine_host::EngineWorker;
#[cfg(target_arch = "wasm32")]
pub use error::ExtensionError;
#[cfg(target_arch = "wasm32")]
pub use relay::EngineRelay;
#[cfg(target_arch = "wasm32")]
pub use service_worker::ServiceWorkerHost;

/// Panics are bugs; make them readable in the console instead of a bare `unreachable` trap.
#[cfg(target_arch = "wasm32")]
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("qwglm panic: {info}").into())));
    });
}
