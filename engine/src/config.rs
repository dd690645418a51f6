//! Model configuration: one validated struct for qwen2 / qwen3 / llama, read from HF `config.json`
//! or GGUF metadata. Validated once here so the model code never re-checks dimensions.

use serde::Deserialize;

use crate::error::{EngineError, Result};
use crate::gguf::GgufHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen2,
    Qwen3,
    Llama,
}

impl Architecture {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            "llama" => Ok(Self::Llama),
            other => Err(EngineError::UnsupportedArchitecture(other.to_string())),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Llama => "llama",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RopeStyle {
    /// HF `rotate_half`: dimension i pairs with i + head_dim/2.
    NeoX,
    /// GGML "normal" rope: dimension 2i pairs with 2i+1. llama-arch GGUFs store Q/K rows permuted
    /// for this style, so using it directly is equivalent to NeoX on the original weights.
    Interleaved,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub max_context: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (qwen2).
    pub attention_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (qwen3).
    pub qk_norm: bool,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks every invariant the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(EngineError::InvalidConfig(msg));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_context),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
            // Dimensions are sent to kernels as u32.
            if v > u32::MAX as usize / 4 {
                return bad(format!("{name} = {v} is too large"));
            }
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!("rms_norm_eps {} must be a positive number", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(format!("rope_theta {} must be a number > 1", self.rope_theta));
        }
        Ok(())
    }

    /// From a Hugging Face `config.json`. Accepts both the classic top-level `rope_theta` and
    /// transformers-5 `rope_parameters: {rope_theta, rope_type}`.
    pub fn from_hf_json(json: &[u8]) -> Result<Self> {
        let raw: HfConfig = serde_json::from_slice(json)
            .map_err(|e| EngineError::Json { what: "config.json", detail: e.to_string() })?;
        let architecture = Architecture::parse(&raw.model_type)?;
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        if let Some(kind) = rope.and_then(|r| r.rope_type.as_deref().or(r.kind.as_deref())) {
            if kind != "default" {
                return Err(EngineError::InvalidConfig(format!("rope type `{kind}` is not supported")));
            }
        }
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0);
        let n_heads = raw.num_attention_heads;
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if n_heads > 0 => raw.hidden_size / n_heads,
            None => 0,
        };
        let cfg = Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            n_layers: raw.num_hidden_layers,
            n_heads,
            n_kv_heads: raw.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: rope_theta as f32,
            rope_style: RopeStyle::NeoX,
            max_context: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => raw.attention_bias.unwrap_or(false),
            },
            qk_norm: architecture == Architecture::Qwen3,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// From GGUF metadata (`{arch}.*` keys). `vocab_size` and whether the output is tied come from
    /// the tensor list, which is the ground truth in a GGUF.
    pub fn from_gguf(header: &GgufHeader) -> Result<Self> {
        let arch_name = header.get_str("general.architecture")?;
        let architecture = Architecture::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_of = |k: &str| -> Result<usize> {
            let v = header.get_u64(&key(k))?;
            usize::try_from(v).map_err(|_| EngineError::InvalidConfig(format!("{k} = {v} is too large")))
        };
        let hidden_size = usize_of("embedding_length")?;
        let n_heads = usize_of("attention.head_count")?;
        let n_kv_heads = if header.get(&key("attention.head_count_kv")).is_some() {
            usize_of("attention.head_count_kv")?
        } else {
            n_heads
        };
        let head_dim = if header.get(&key("attention.key_length")).is_some() {
            usize_of("attention.key_length")?
        } else if n_heads > 0 {
            hidden_size / n_heads
        } else {
            0
        };
        let embed = header
            .tensors
            .iter()
            .find(|t| t.name == "token_embd.weight")
            .ok_or_else(|| EngineError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = match embed.dims.as_slice() {
            [cols, rows] if *cols as usize == hidden_size => *rows as usize,
            dims => {
                return Err(EngineError::ShapeMismatch {
                    name: "token_embd.weight".into(),
                    expected: vec![hidden_size, 0],
                    found: dims.iter().map(|&d| d as usize).collect(),
                })
            }
        };
        let tie_word_embeddings = !header.tensors.iter().any(|t| t.name == "output.weight");
        let rope_theta = if header.get(&key("rope.freq_base")).is_some() {
            header.get_f32(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        let cfg = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: usize_of("feed_forward_length")?,
            n_layers: usize_of("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps: header.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta,
            rope_style: match architecture {
                Architecture::Llama => RopeStyle::Interleaved,
                _ => RopeStyle::NeoX,
            },
            max_context: usize_of("context_length")?,
            tie_word_embeddings,
            attention_bias: header.tensors.iter().any(|t| t.name == "blk.0.attn_q.bias"),
            qk_norm: architecture == Architecture::Qwen3,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Deserialize)]
struct HfRope {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: String,
    #[serde(default)]
    vocab_size: usize,
    #[serde(default)]
    hidden_size: usize,
    #[serde(default)]
    intermediate_size: usize,
    #[serde(default)]
    num_hidden_layers: usize,
    #[serde(default)]
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<HfRope>,
    rope_scaling: Option<HfRope>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
}
