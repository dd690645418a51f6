//! QWGLM engine: everything between a weights file and a stream of tokens.
//! Pure Rust, no web dependencies; builds natively and for wasm32.

pub mod error;
pub mod gguf;
pub mod quant;
pub mod weights;

pub use error::{EngineError, Result};
pub mod beam;
pub mod sampling;
pub mod safetensors_source;
pub mod clock;
pub mod device;
pub mod kernels;
pub mod shaders;
pub mod config;
pub mod model;
pub mod session;
pub mod tokenizer;
pub mod chat;
pub mod generate;
pub mod inspect;
pub mod loader;
