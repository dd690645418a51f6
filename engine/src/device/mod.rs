//! The device boundary. Model code allocates buffers, uploads weights and runs recorded passes of
//! `Op`s; it never knows which device executes them. `RefDevice` (plain Rust) is the oracle; the
//! wgpu device and the GPU simulator implement the same trait.

mod ref_device;
#[cfg(feature = "wgpu")]
mod wgpu_device;

use std::future::Future;
use std::pin::Pin;

pub use ref_device::RefDevice;
#[cfg(feature = "wgpu")]
pub use wgpu_device::{WgpuDevice, WgpuOptions};

use crate::error::Result;
use crate::kernels::Op;

/// Opaque handle of a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

/// What a buffer holds; lets devices choose memory kinds and report usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    Weights,
    Activations,
    KvCache,
    Tokens,
}

/// Runtime facts that select kernel variants and buffer splits.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub backend: &'static str,
    /// Largest single buffer binding; bigger tensors must be split by the loader.
    pub max_binding_bytes: u64,
    /// Buffers live in host memory (the reference device, the simulator): reading a logits row
    /// costs a copy, so the engine samples from rows instead of selecting on the device.
    pub host_memory: bool,
}

/// A read-back in flight. Boxed so `Device` stays object-safe; not `Send`, because WebGPU futures aren't.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>;

/// A read-back taken at the end of one pass (`Device::run_then_read`), redeemed later with
/// `Device::redeem`. Between the two the host may submit more passes: the copy belongs to its own
/// pass, so redeeming waits for that pass only, not for everything submitted since.
#[derive(Debug)]
pub enum ReadTicket {
    /// Devices that finish work synchronously hold the bytes already.
    Ready(Vec<u8>),
    /// A device-side staging slot (meaningful to the device that issued it).
    Pending { slot: usize },
}

pub trait Device {
    fn info(&self) -> DeviceInfo;
    /// Allocates a zero-initialised buffer of `bytes` (a multiple of 4).
    fn alloc(&mut self, kind: BufferKind, label: &str, bytes: u64) -> Result<BufferId>;
    fn free(&mut self, buf: BufferId);
    fn write(&mut self, buf: BufferId, offset_bytes: u64, data: &[u8]) -> Result<()>;
    /// Executes a pass: the ops in order, as one unit of submission.
    fn run(&mut self, pass: &[Op]) -> Result<()>;
    /// Reads `len` bytes at `offset_bytes` after all submitted work has finished.
    fn read(&mut self, buf: BufferId, offset_bytes: u64, len: u64) -> ReadFuture<'_>;
    /// Bytes currently allocated, by kind (for status displays and budgets).
    fn allocated_bytes(&self) -> u64;

    /// Runs `pass`, then copies `len` bytes of `buf` at `offset_bytes` for reading back. Lets a
    /// caller keep several passes in flight (pipelined decoding) and still read each pass's
    /// result as soon as that pass is done. Every ticket must be redeemed.
    ///
    /// The default suits devices whose reads complete immediately (reference, simulator).
    fn run_then_read(&mut self, pass: &[Op], buf: BufferId, offset_bytes: u64, len: u64) -> Result<ReadTicket> {
        self.run(pass)?;
        match crate::session::now_or_never(self.read(buf, offset_bytes, len)) {
            Some(bytes) => Ok(ReadTicket::Ready(bytes?)),
            None => Err(crate::error::EngineError::Device("this device's reads are asynchronous: it must implement run_then_read".into())),
        }
    }

    /// The bytes of a `run_then_read`, once its pass has finished.
    fn redeem(&mut self, ticket: ReadTicket) -> ReadFuture<'_> {
        Box::pin(async move {
            match ticket {
                ReadTicket::Ready(bytes) => Ok(bytes),
                ReadTicket::Pending { .. } => Err(crate::error::EngineError::Device("a pending read ticket from another device".into())),
            }
        })
    }
}

/// Reads f32 values back (little-endian on every device we target).
pub async fn read_f32(device: &mut dyn Device, buf: BufferId, offset: usize, len: usize) -> Result<Vec<f32>> {
    let bytes = device.read(buf, (offset * 4) as u64, (len * 4) as u64).await?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Reads u32 values back.
pub async fn read_u32(device: &mut dyn Device, buf: BufferId, offset: usize, len: usize) -> Result<Vec<u32>> {
    let bytes = device.read(buf, (offset * 4) as u64, (len * 4) as u64).await?;
    Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}
