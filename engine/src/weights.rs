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

/// A tensor read that may wait (IndexedDB, network); it owns what it needs from the name.
pub type TensorBytesFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Cow<'a, [u8]>>> + 'a>>;

/// A `WeightSource` whose reads are asynchronous: the browser's model store streams each tensor
/// out of IndexedDB chunks while the model loads, so no whole model file is ever in memory.
/// `Model::load_streamed` takes one; `Model::load` wraps a synchronous source in `Immediate`.
pub trait AsyncWeightSource {
    fn format(&self) -> SourceFormat;
    /// All tensors, in file order.
    fn tensors(&self) -> &[TensorMeta];
    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors().iter().find(|t| t.name == name)
    }
    /// The tensor's raw bytes in its stored format; the length must match its shape and type.
    fn tensor_bytes<'a>(&'a self, name: &str) -> TensorBytesFuture<'a>;
}

/// A synchronous source seen as an asynchronous one whose reads complete at once.
pub struct Immediate<'s>(pub &'s dyn WeightSource);

impl AsyncWeightSource for Immediate<'_> {
    fn format(&self) -> SourceFormat {
        self.0.format()
    }
    fn tensors(&self) -> &[TensorMeta] {
        self.0.tensors()
    }
    fn tensor(&self, name: &str) -> Option<&TensorMeta> {
        self.0.tensor(name)
    }
    fn tensor_bytes<'a>(&'a self, name: &str) -> TensorBytesFuture<'a> {
        Box::pin(std::future::ready(self.0.tensor_bytes(name)))
    }
}
