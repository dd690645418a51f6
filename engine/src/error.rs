//! The engine's one error type. Every fallible path returns `Result<T>`; nothing panics on bad input.

use thiserror::Error;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum EngineError {
    // === File formats (GGUF, safetensors, config.json) ===
    #[error("truncated {what}: need {needed} bytes at offset {offset}, file has {len}")]
    Truncated { what: &'static str, offset: u64, needed: u64, len: u64 },
    #[error("not a GGUF file (magic {found:02x?})")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("unknown GGML tensor type id {0}")]
    UnknownTensorType(u32),
    #[error("tensor type {0} is recognised but not supported by this engine")]
    UnsupportedTensorType(String),
    #[error("unknown GGUF metadata value type {0}")]
    UnknownMetaType(u32),
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("{what} count {count} cannot fit in a file of {len} bytes")]
    ImplausibleCount { what: &'static str, count: u64, len: u64 },
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("invalid JSON in {what}: {detail}")]
    Json { what: &'static str, detail: String },

    // === Weights and model configuration ===
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}`: {detail}")]
    BadTensor { name: String, detail: String },
    #[error("missing metadata key `{0}`")]
    MissingMetadata(String),
    #[error("metadata key `{key}` has the wrong type: expected {expected}")]
    MetadataType { key: String, expected: &'static str },
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    #[error("unsupported architecture `{0}` (supported: qwen2, qwen3, llama)")]
    UnsupportedArchitecture(String),

    // === Tokenizer and chat template ===
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),

    // === Generation ===
    #[error("prompt of {prompt} tokens does not fit the context of {context} tokens")]
    ContextOverflow { prompt: usize, context: usize },
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),
    #[error("empty prompt")]
    EmptyPrompt,

    // === Device ===
    #[error("device: {0}")]
    Device(String),
    #[error("device out of memory: {0}")]
    OutOfMemory(String),
    #[error("device lost: {0}")]
    DeviceLost(String),
    #[error("kernel {kernel}: {detail}")]
    Kernel { kernel: String, detail: String },

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl EngineError {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt { what, detail: detail.into() }
    }
}

/// `bail!(Variant { .. })` — return early with an engine error.
#[macro_export]
macro_rules! bail {
    ($e:expr) => {
        return Err($e.into())
    };
}
