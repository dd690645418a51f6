//! The GPU simulator: the engine's WGSL kernels, compiled to SIMT bytecode at build time
//! (`build.rs`, `qwglm-sim-lower`), run by a warp interpreter (`interp`) behind the engine's
//! `Device` trait (`SimDevice`). For machines without WebGPU: one source of truth for the math.

pub mod device;
pub mod interp;

pub use device::{take_profile, ProfileRow, SimDevice, SimOptions};
pub use interp::Counters;

use qwglm_sim_lower::isa::KernelProgram;

/// Everything that can go wrong in the simulator itself.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("embedded kernel bytecode is corrupt: {0}")]
    Bytecode(String),
    #[error("no compiled kernel `{0}` (was shaders/ changed without rebuilding?)")]
    MissingKernel(String),
    #[error("kernel `{file}` has no entry point `{entry}`")]
    MissingEntry { file: String, entry: String },
}

impl From<SimError> for engine::error::EngineError {
    fn from(e: SimError) -> Self {
        engine::error::EngineError::Device(e.to_string())
    }
}

/// The bytecode of every kernel in `shaders/`, as compiled by build.rs.
static KERNELS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.json"));

/// Decodes the embedded kernel programs.
pub fn kernel_programs() -> Result<Vec<KernelProgram>, SimError> {
    serde_json::from_str(KERNELS_JSON).map_err(|e| SimError::Bytecode(e.to_string()))
}
