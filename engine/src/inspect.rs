//! `qwglm inspect`: what is in a model file — metadata, tensors and the quantization mix.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::gguf::{GgufHeader, MetaValue};
use crate::weights::TensorMeta;

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub ty: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeShare {
    pub tensors: usize,
    pub elements: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub format: String,
    pub file_bytes: u64,
    /// Parsed model configuration, or why it could not be derived.
    pub config: std::result::Result<ModelConfig, String>,
    pub metadata: Vec<(String, String)>,
    pub tensors: Vec<TensorRow>,
    pub quant_mix: BTreeMap<String, TypeShare>,
    pub parameters: u64,
}

/// Short printable form of a metadata value; long arrays are summarised.
fn show(v: &MetaValue) -> String {
    match v {
        MetaValue::String(s) if s.chars().count() > 80 => {
            format!("{:?}… ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
        }
        MetaValue::String(s) => format!("{s:?}"),
        MetaValue::Array(items) if items.len() > 8 => {
            let head: Vec<String> = items.iter().take(4).map(show).collect();
            format!("[{}, …] ({} items)", head.join(", "), items.len())
        }
        MetaValue::Array(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        MetaValue::U8(x) => x.to_string(),
        MetaValue::I8(x) => x.to_string(),
        MetaValue::U16(x) => x.to_string(),
        MetaValue::I16(x) => x.to_string(),
        MetaValue::U32(x) => x.to_string(),
        MetaValue::I32(x) => x.to_string(),
        MetaValue::U64(x) => x.to_string(),
        MetaValue::I64(x) => x.to_string(),
        MetaValue::F32(x) => x.to_string(),
        MetaValue::F64(x) => x.to_string(),
        MetaValue::Bool(x) => x.to_string(),
    }
}

impl InspectReport {
    fn new(format: &str, file_bytes: u64, config: Result<ModelConfig>, metadata: Vec<(String, String)>, tensors: &[TensorMeta]) -> Self {
        let mut quant_mix: BTreeMap<String, TypeShare> = BTreeMap::new();
        let mut rows = Vec::with_capacity(tensors.len());
        let mut parameters = 0u64;
        for t in tensors {
            let share = quant_mix.entry(t.ty.name().to_string()).or_default();
            share.tensors += 1;
            share.elements += t.n_elements() as u64;
            parameters += t.n_elements() as u64;
            rows.push(TensorRow { name: t.name.clone(), ty: t.ty.name().to_string(), shape: t.shape.clone() });
        }
        Self {
            format: format.into(),
            file_bytes,
            config: config.map_err(|e| e.to_string()),
            metadata,
            tensors: rows,
            quant_mix,
            parameters,
        }
    }

    pub fn from_gguf(header: &GgufHeader, tensors: &[TensorMeta], file_bytes: u64) -> Self {
        let metadata = header.metadata.iter().map(|(k, v)| (k.clone(), show(v))).collect();
        Self::new(&format!("GGUF v{}", header.version), file_bytes, ModelConfig::from_gguf(header), metadata, tensors)
    }

    pub fn to_text(&self, with_tensors: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "format:     {} ({:.1} MiB)", self.format, self.file_bytes as f64 / (1 << 20) as f64);
        let _ = writeln!(s, "parameters: {} ({:.1} M)", self.parameters, self.parameters as f64 / 1e6);
        match &self.config {
            Ok(c) => {
                let _ = writeln!(
                    s,
                    "model:      {} — {} layers, hidden {}, ffn {}, heads {}/{} (kv), head_dim {}, vocab {}, ctx {}, rope θ {}, tied output: {}",
                    c.architecture.name(), c.n_layers, c.hidden_size, c.intermediate_size, c.n_heads, c.n_kv_heads,
                    c.head_dim, c.vocab_size, c.max_context, c.rope_theta, c.tie_word_embeddings
                );
            }
            Err(e) => {
                let _ = writeln!(s, "model:      not loadable: {e}");
            }
        }
        let _ = writeln!(s, "quantization mix:");
        for (ty, share) in &self.quant_mix {
            let pct = share.elements as f64 * 100.0 / self.parameters.max(1) as f64;
            let _ = writeln!(s, "  {ty:<6} {:>4} tensors {:>12} weights ({pct:5.1}%)", share.tensors, share.elements);
        }
        let _ = writeln!(s, "metadata ({} keys):", self.metadata.len());
        for (k, v) in &self.metadata {
            let _ = writeln!(s, "  {k} = {v}");
        }
        if with_tensors {
            let _ = writeln!(s, "tensors ({}):", self.tensors.len());
            for t in &self.tensors {
                let _ = writeln!(s, "  {:<40} {:<5} {:?}", t.name, t.ty, t.shape);
            }
        } else {
            let _ = writeln!(s, "tensors: {} (list them with --tensors)", self.tensors.len());
        }
        s
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub fn inspect_path(path: &std::path::Path) -> Result<InspectReport> {
    use crate::weights::WeightSource;
    if path.is_dir() {
        let files = crate::loader::open_model(path)?;
        let bytes = std::fs::metadata(path.join("model.safetensors")).map(|m| m.len()).unwrap_or(0);
        let metadata = vec![("config.json".to_string(), format!("{:?}", files.config.architecture))];
        return Ok(InspectReport::new("safetensors", bytes, Ok(files.config), metadata, files.source.tensors()));
    }
    let file = crate::gguf::GgufFile::open(path)?;
    let bytes = std::fs::metadata(path)?.len();
    Ok(InspectReport::from_gguf(file.header(), file.tensors(), bytes))
}
