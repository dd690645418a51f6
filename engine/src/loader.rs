//! Opens a model from disk: a GGUF file (weights, config, tokenizer and chat template in one), or
//! a Hugging Face directory (`config.json`, `model.safetensors`, optional `tokenizer.json`,
//! `tokenizer_config.json`). The browser builds the same pieces from IndexedDB instead.

use crate::chat::ChatTemplate;
use crate::config::ModelConfig;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;

/// Everything needed to build a `Model` and talk to it.
pub struct ModelFiles {
    pub source: Box<dyn WeightSource>,
    pub config: ModelConfig,
    /// Absent for bare checkpoints (the tiny test fixtures); such models take token ids only.
    pub tokenizer: Option<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub format: &'static str,
}

#[cfg(not(target_arch = "wasm32"))]
pub fn open_model(path: &std::path::Path) -> Result<ModelFiles> {
    use crate::gguf::GgufFile;
    use crate::safetensors_source::SafetensorsFile;

    if path.is_dir() {
        let read = |name: &str| std::fs::read(path.join(name));
        let config = ModelConfig::from_hf_json(&read("config.json").map_err(|e| {
            EngineError::InvalidConfig(format!("{}: cannot read config.json: {e}", path.display()))
        })?)?;
        let weights = path.join("model.safetensors");
        if !weights.exists() {
            return Err(EngineError::MissingTensor(format!("{} (no model.safetensors)", path.display())));
        }
        let source = SafetensorsFile::open(&weights)?;
        let tok_config = read("tokenizer_config.json").ok();
        let tokenizer = match read("tokenizer.json") {
            Ok(json) => Some(Tokenizer::from_json(&json, tok_config.as_deref())?),
            Err(_) => None,
        };
        let template = match &tok_config {
            Some(cfg) if tokenizer.is_some() => Some(ChatTemplate::from_tokenizer_config(cfg)?),
            _ => None,
        };
        return Ok(ModelFiles { source: Box::new(source), config, tokenizer, template, format: "safetensors" });
    }
    let file = GgufFile::open(path)?;
    let header = file.header();
    let config = ModelConfig::from_gguf(header)?;
    let tokenizer = Tokenizer::from_gguf(header)?;
    let template = ChatTemplate::from_gguf(header)?;
    Ok(ModelFiles { source: Box::new(file), config, tokenizer: Some(tokenizer), template: Some(template), format: "gguf" })
}
