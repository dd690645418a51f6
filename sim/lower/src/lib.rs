//! The GPU simulator's instruction set (`isa`) and, behind the `compile` feature, the compiler
//! from naga's IR of a WGSL compute kernel to that bytecode (`compile`). The runtime crate
//! (`qwglm-sim`) only needs `isa`; its build script needs `compile`.

pub mod isa;
#[cfg(feature = "compile")]
pub mod compile;
#[cfg(feature = "compile")]
pub mod peephole;
#[cfg(feature = "compile")]
pub mod regalloc;

/// Everything that can go wrong while lowering a kernel.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// WGSL that naga rejects (parse or validation), with the place it points at.
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
    /// Valid WGSL that the simulator does not implement.
    #[error("{place}: unsupported by the GPU simulator: {what}")]
    Unsupported { place: String, what: String },
}
