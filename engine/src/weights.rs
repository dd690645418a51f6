//! `WeightSource`: one interface in front of GGUF files, safetensors files and (in the extension)
//! IndexedDB chunk stores. The model loader asks for tensors one at a time and streams each into a
//! device buffer, so no source ever has to hold a whole model file in memory.

use std::borrow::Cow;

use crate::error::Result;
use crate::quant::GgmlType;

/// A tensor as the model sees it: row-major shape, outermost dimension first
/// (a `[out, in]` matrix has `in` contiguous), stored element type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<usize>,
}

impl TensorMeta {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Which naming scheme a source uses (GGUF `blk.N.attn_q.weight` vs HF `model.layers.N.self_attn.q_proj.weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Gguf,
    Safetensors,
}

pub trait WeightSource {
    fn format(&self) -> SourceFormat;
    /// All tensors, in file order.
    fn tensors(&self) -> &[TensorMeta];
    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors().iter().find(|t| t.name == name)
    }
    /// The tensor's raw bytes in its stored format (GGUF blocks, little-endian f32/f16/bf16).
    /// The length is checked against the shape and type before it is returned.
    fn tensor_bytes(&self, name: &str) -> Result<Cow<'_, [u8]>>;
}
