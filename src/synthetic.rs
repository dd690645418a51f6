//! `qwglm bench --synthetic SHAPE`: random weights with the exact shapes and tensor formats of a
//! named configuration, generated tensor by tensor while the model loads. Forward-pass speed does
//! not depend on the weight values, so this measures a model where its file is not at hand (the
//! lent GPU machine reaches no model hub). The formats follow the GGUF files we compare against:
//! `qwen2.5-0.5b` is Qwen2.5-Coder-0.5B-Instruct Q4_K_M's mix, `llama3-8b-q4_k_m` llama.cpp's
//! Q4_K_M recipe for Llama-3-8B (Q6_K for attn_v and ffn_down in every other layer),
//! `smollm2-135m` the SmolLM2-135M-Instruct Q4_1 file the extension downloads by default (Q4_1
//! layers, Q8_0 embedding tied to the output).

use std::borrow::Cow;

use engine::config::{Architecture, ModelConfig, RopeStyle};
use engine::quant::GgmlType;
use engine::weights::{SourceFormat, TensorMeta, WeightSource};
use engine::EngineError;

/// The shapes `--synthetic` accepts.
pub const SHAPES: [&str; 4] = ["qwen2.5-0.5b", "qwen3-0.6b", "llama3-8b-q4_k_m", "smollm2-135m"];

pub struct SyntheticSource {
    tensors: Vec<TensorMeta>,
}

/// Formats of one layer's projections (q, k, v, o, gate, up, down).
struct LayerFormats([GgmlType; 7]);

/// The config and a weight source for a named shape.
pub fn synthetic(shape: &str) -> Result<(ModelConfig, SyntheticSource), String> {
    use GgmlType::*;
    let (cfg, embed_ty, output_ty, layer): (ModelConfig, GgmlType, Option<GgmlType>, fn(usize) -> LayerFormats) = match shape {
        "qwen2.5-0.5b" => (
            ModelConfig {
                architecture: Architecture::Qwen2,
                vocab_size: 151936,
                hidden_size: 896,
                intermediate_size: 4864,
                n_layers: 24,
                n_heads: 14,
                n_kv_heads: 2,
                head_dim: 64,
                rms_norm_eps: 1e-6,
                rope_theta: 1e6,
                rope_style: RopeStyle::NeoX,
                max_context: 32768,
                tie_word_embeddings: true,
                attention_bias: true,
                qk_norm: false,
            },
            Q8_0,
            None,
            |i| LayerFormats([Q5_0, Q5_0, Q8_0, Q5_0, Q5_0, Q5_0, if i % 2 == 0 { Q6_K } else { Q4_K }]),
        ),
        "qwen3-0.6b" => (
            ModelConfig {
                architecture: Architecture::Qwen3,
                vocab_size: 151936,
                hidden_size: 1024,
                intermediate_size: 3072,
                n_layers: 28,
                n_heads: 16,
                n_kv_heads: 8,
                head_dim: 128,
                rms_norm_eps: 1e-6,
                rope_theta: 1e6,
                rope_style: RopeStyle::NeoX,
                max_context: 40960,
                tie_word_embeddings: true,
                attention_bias: false,
                qk_norm: true,
            },
            Q8_0,
            None,
            |_| LayerFormats([Q8_0; 7]),
        ),
        "llama3-8b-q4_k_m" => (
            ModelConfig {
                architecture: Architecture::Llama,
                vocab_size: 128256,
                hidden_size: 4096,
                intermediate_size: 14336,
                n_layers: 32,
                n_heads: 32,
                n_kv_heads: 8,
                head_dim: 128,
                rms_norm_eps: 1e-5,
                rope_theta: 500000.0,
                rope_style: RopeStyle::Interleaved,
                max_context: 8192,
                tie_word_embeddings: false,
                attention_bias: false,
                qk_norm: false,
            },
            Q4_K,
            Some(Q6_K),
            |i| {
                let wide = if i % 2 == 0 { Q6_K } else { Q4_K };
                LayerFormats([Q4_K, Q4_K, wide, Q4_K, Q4_K, Q4_K, wide])
            },
        ),
        "smollm2-135m" => (
            ModelConfig {
                architecture: Architecture::Llama,
                vocab_size: 49152,
                hidden_size: 576,
                intermediate_size: 1536,
                n_layers: 30,
                n_heads: 9,
                n_kv_heads: 3,
                head_dim: 64,
                rms_norm_eps: 1e-5,
                rope_theta: 100000.0,
                rope_style: RopeStyle::Interleaved,
                max_context: 8192,
                tie_word_embeddings: true,
                attention_bias: false,
                qk_norm: false,
            },
            Q8_0,
            None,
            |_| LayerFormats([Q4_1; 7]),
        ),
        other => return Err(format!("unknown synthetic shape {other:?}; one of {}", SHAPES.join(", "))),
    };
    let (h, q, kv, inter) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size);
    let mut tensors = Vec::new();
    let mut add = |name: String, ty: GgmlType, shape: Vec<usize>| tensors.push(TensorMeta { name, ty, shape });
    add("token_embd.weight".into(), embed_ty, vec![cfg.vocab_size, h]);
    add("output_norm.weight".into(), GgmlType::F32, vec![h]);
    if let Some(ty) = output_ty {
        add("output.weight".into(), ty, vec![cfg.vocab_size, h]);
    }
    for i in 0..cfg.n_layers {
        let LayerFormats([tq, tk, tv, to, tg, tu, td]) = layer(i);
        let l = |s: &str| format!("blk.{i}.{s}");
        add(l("attn_norm.weight"), F32, vec![h]);
        add(l("attn_q.weight"), tq, vec![q, h]);
        add(l("attn_k.weight"), tk, vec![kv, h]);
        add(l("attn_v.weight"), tv, vec![kv, h]);
        if cfg.attention_bias {
            add(l("attn_q.bias"), F32, vec![q]);
            add(l("attn_k.bias"), F32, vec![kv]);
            add(l("attn_v.bias"), F32, vec![kv]);
        }
        if cfg.qk_norm {
            add(l("attn_q_norm.weight"), F32, vec![cfg.head_dim]);
            add(l("attn_k_norm.weight"), F32, vec![cfg.head_dim]);
        }
        add(l("attn_output.weight"), to, vec![h, q]);
        add(l("ffn_norm.weight"), F32, vec![h]);
        add(l("ffn_gate.weight"), tg, vec![inter, h]);
        add(l("ffn_up.weight"), tu, vec![inter, h]);
        add(l("ffn_down.weight"), td, vec![h, inter]);
    }
    Ok((cfg, SyntheticSource { tensors }))
}

impl WeightSource for SyntheticSource {
    fn format(&self) -> SourceFormat {
        SourceFormat::Gguf
    }
    fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }
    fn tensor_bytes(&self, name: &str) -> engine::Result<Cow<'_, [u8]>> {
        let meta = self.tensor(name).ok_or_else(|| EngineError::MissingTensor(name.to_string()))?;
        let mut rng = name.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3)) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let n = meta.n_elements();
        if meta.ty == GgmlType::F32 {
            // Norm weights near 1, biases near 0: activations stay finite through every layer.
            let bias = name.ends_with(".bias");
            let values: Vec<u8> = (0..n)
                .flat_map(|_| {
                    let u = (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    let v = if bias { 0.1 * u } else { 1.0 + 0.1 * u };
                    v.to_le_bytes()
                })
                .collect();
            return Ok(Cow::Owned(values));
        }
        let block_bytes = meta.ty.block_bytes();
        let n_blocks = n / meta.ty.block_elems();
        let mut data = vec![0u8; n_blocks * block_bytes];
        for chunk in data.chunks_mut(8) {
            let word = next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        // Small positive f16 block scales (d, and dmin where present), so values stay finite.
        let scale = half::f16::from_f32(0.002).to_le_bytes();
        for block in data.chunks_exact_mut(block_bytes) {
            for field in meta.ty.fields().iter().filter(|f| f.name == "d" || f.name.starts_with("dm")) {
                for half in block[field.offset..field.offset + field.len.min(4)].chunks_exact_mut(2) {
                    half.copy_from_slice(&scale);
                }
            }
        }
        Ok(Cow::Owned(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SmolLM2 shape is the file the extension downloads by default: same config and the same
    /// tensors (names, shapes, formats) as the real GGUF that scripts/fetch-models.sh fetches.
    #[test]
    fn smollm2_shape_matches_the_real_file() {
        let dir = std::env::var_os("QWGLM_MODELS").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qwglm/models")
        });
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        let real = engine::loader::open_model(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-models.sh first)", path.display()));
        let (cfg, source) = synthetic("smollm2-135m").expect("shape");
        let fields = |c: &ModelConfig| {
            (c.architecture, c.vocab_size, c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim)
        };
        assert_eq!(fields(&cfg), fields(&real.config));
        assert_eq!((cfg.rms_norm_eps, cfg.rope_theta, cfg.rope_style), (real.config.rms_norm_eps, real.config.rope_theta, real.config.rope_style));
        assert_eq!((cfg.tie_word_embeddings, cfg.attention_bias, cfg.qk_norm), (real.config.tie_word_embeddings, real.config.attention_bias, real.config.qk_norm));
        let listing = |tensors: &[TensorMeta]| {
            let mut v: Vec<(String, GgmlType, Vec<usize>)> = tensors.iter().map(|t| (t.name.clone(), t.ty, t.shape.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(listing(source.tensors()), listing(real.source.tensors()));
    }

    #[test]
    fn every_shape_builds() {
        for shape in SHAPES {
            let (cfg, source) = synthetic(shape).unwrap_or_else(|e| panic!("{shape}: {e}"));
            assert!(source.tensors().iter().any(|t| t.name == "token_embd.weight"), "{shape}");
            assert_eq!(source.tensors().iter().filter(|t| t.name.ends_with("ffn_down.weight")).count(), cfg.n_layers, "{shape}");
        }
        assert!(synthetic("nope").is_err());
    }
}
