//! GGUF v2/v3 reader: header, metadata, tensor infos, alignment. Parses from a byte prefix, so a
//! streaming source (IndexedDB chunks) can parse the header before the tensor data arrives.
//! (Parser body: see the engine-core issue; API fixed here.)

use crate::error::{EngineError, Result};
use crate::quant::GgmlType;

/// A metadata value. Arrays keep their element type so `inspect` can print them faithfully.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

/// One tensor as described in the GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (innermost) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the tensor data relative to the start of the data section.
    pub offset: u64,
}

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the (aligned) data section.
    pub data_offset: u64,
}
