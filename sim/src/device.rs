//! `SimDevice`: the engine's `Device` boundary on the warp interpreter. Buffers are host word
//! vectors; an op runs the same dispatches (`engine::shaders::plan`), bindings (`slots`) and
//! params uniform as on the GPU, so the simulator checks the very kernels WebGPU runs.

use std::collections::HashMap;

use engine::device::{BufferId, BufferKind, Device, DeviceInfo, ReadFuture};
use engine::error::{EngineError, Result};
use engine::kernels::{MatMulParams, Op};
use engine::shaders::{self, Slot};
use qwglm_sim_lower::isa::KernelProgram;

use crate::interp::{self, Bindings, Counters, View};
use crate::SimError;

/// Construction options.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Worker threads for workgroups (native only); 0 = all available cores.
    pub threads: usize,
    /// Largest buffer, like a GPU's binding limit (default 1 GiB).
    pub max_binding_bytes: Option<u64>,
    /// Start with the cache model on (see `SimDevice::set_cache_model`).
    pub cache_model: bool,
    /// Kernel variants to run in place of the portable kernels, as a GPU offering them would
    /// (engine::shaders::Variants, with `WgpuDevice`'s plans and tiles): the simulator's own
    /// choice is none (its f32 kernels with their CPU geometry are faster here); tests turn them
    /// on to check those kernels too. Tensor-core MatMuls (matmul_coop_<format>.wgsl) only in
    /// native builds: the wasm build leaves their bytecode out (`MissingKernel` there).
    pub variants: shaders::Variants,
}

pub struct SimDevice {
    programs: HashMap<String, KernelProgram>,
    buffers: Vec<Option<Vec<u32>>>,
    allocated: u64,
    scratch: Vec<u32>,
    dummy: Vec<u32>,
    threads: usize,
    max_binding_bytes: u64,
    cache_model: bool,
    variants: shaders::Variants,
    counters: Counters,
}

/// One line of the dispatch profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileRow {
    pub calls: u64,
    pub seconds: f64,
    pub warp_instructions: u64,
}

/// Per-dispatch profile of every SimDevice of the process (native only, while
/// `QWGLM_SIM_PROFILE` is set): time, calls and warp instructions by kernel file, entry point
/// and grid.
#[cfg(not(target_arch = "wasm32"))]
static PROFILE: std::sync::Mutex<Option<HashMap<String, ProfileRow>>> = std::sync::Mutex::new(None);

#[cfg(not(target_arch = "wasm32"))]
fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("QWGLM_SIM_PROFILE").is_some())
}

/// The dispatch profile gathered since the last call, slowest first (empty unless
/// `QWGLM_SIM_PROFILE` is set; native only).
pub fn take_profile() -> Vec<(String, ProfileRow)> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut rows: Vec<_> = PROFILE.lock().map(|mut p| p.take().unwrap_or_default()).unwrap_or_default().into_iter().collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        rows
    }
    #[cfg(target_arch = "wasm32")]
    Vec::new()
}

/// Activation rows per tile of the MatMul kernels (shaders/common/matmul_body.wgsl).
const MATMUL_TILE_ROWS: u32 = 64;
/// Most rows of a partial MatMul tile run as mat-vecs (a tile costs ~55 mat-vecs natively).
const MAX_MATVEC_ROWS: u32 = 40;

/// Whether MatMul rows may run as mat-vecs (`QWGLM_SIM_MATVEC=gpu`, native, keeps the GPU's
/// kernels and geometry throughout, for comparisons).
fn sim_matvec_rows() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static GPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        !*GPU.get_or_init(|| std::env::var("QWGLM_SIM_MATVEC").is_ok_and(|v| v == "gpu"))
    }
    #[cfg(target_arch = "wasm32")]
    true
}

/// The simulator's own geometry for a decode mat-vec, where the kernel offers it: one thread per
/// row (64 rows per workgroup) with a whole weight block per loop pass (`sim_block_per_thread`,
/// shaders/matvec_q4_1.wgsl) or 8 weights per pass (`sim_row_per_thread` of
/// shaders/common/matvec_body.wgsl), or per pair of rows (`sim_pair_per_thread` of
/// shaders/common/matvec_rows.wgsl, 256 rows). A warp's
/// lanes are SIMD lanes of one core here, not threads of a wide GPU: whole rows per lane need no
/// reduction through workgroup memory and leave no lane idle at small k, and the loop counter
/// and activation addresses are the same in every lane. `QWGLM_SIM_MATVEC=gpu` (native) keeps
/// the GPU's entry points, for comparisons.
fn sim_matvec<'p>(op: &Op, program: &'p KernelProgram) -> Option<(&'p str, [u32; 3])> {
    let Op::MatMul { p, .. } = op else { return None };
    if p.m != 1 || p.n == 0 {
        return None;
    }
    if !sim_matvec_rows() {
        return None;
    }
    for (name, rows_per_thread) in [("sim_block_per_thread", 1), ("sim_row_per_thread", 1), ("sim_pair_per_thread", 2)] {
        if let Some(entry) = program.entry(name) {
            let rows = entry.workgroup_size.iter().product::<u32>() * rows_per_thread;
            return Some((&entry.name, shaders::grid(p.n.div_ceil(rows))));
        }
    }
    None
}

fn device_err(detail: impl Into<String>) -> EngineError {
    EngineError::Device(detail.into())
}

impl SimDevice {
    pub fn new(opts: SimOptions) -> Result<Self> {
        let programs = crate::kernel_programs()?.into_iter().map(|p| (p.file.clone(), p)).collect();
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Self {
            programs,
            buffers: Vec::new(),
            allocated: 0,
            scratch: Vec::new(),
            dummy: vec![0; 4],
            threads,
            max_binding_bytes: opts.max_binding_bytes.unwrap_or(1 << 30),
            cache_model: opts.cache_model,
            variants: opts.variants,
            counters: Counters::default(),
        })
    }

    /// Counters since creation (or the last `reset_counters`): instructions, SIMD efficiency,
    /// cache hit rate (while the cache model is on), memory traffic.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// The cache model costs time, so it runs only while someone looks (the GPU-status view).
    pub fn set_cache_model(&mut self, on: bool) {
        self.cache_model = on;
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn buffer(&self, id: BufferId) -> Result<&Vec<u32>> {
        self.buffers.get(id.0 as usize).and_then(|b| b.as_ref()).ok_or_else(|| device_err(format!("unknown buffer {}", id.0)))
    }

    fn check_op(&self, op: &Op) -> Result<()> {
        let kernel = format!("{:?}", op.kernel_id());
        let needs = op.required_bytes().map_err(|detail| EngineError::Kernel { kernel: kernel.clone(), detail })?;
        for (id, what, bytes) in needs {
            let have = self.buffer(id)?.len() as u64 * 4;
            if have < bytes {
                return Err(EngineError::Kernel { kernel, detail: format!("{what} buffer has {have} bytes, needs {bytes}") });
            }
        }
        // As WebGPU: a buffer bound writable may not be bound again in the same dispatch.
        let slots = shaders::slots_for(op, self.variants);
        let (_, writable) = shaders::storage_layout_for(op.kernel_id(), self.variants);
        let first_writable = slots.len().saturating_sub(writable);
        for (i, slot) in slots.iter().enumerate() {
            let Slot::Buffer(id) = slot else { continue };
            let again = slots[i + 1..].iter().position(|s| s == slot).map(|j| i + 1 + j);
            if let Some(j) = again.filter(|&j| i >= first_writable || j >= first_writable) {
                return Err(EngineError::Kernel { kernel, detail: format!("buffer {} is bound at {} and {} and written", id.0, i + 1, j + 1) });
            }
        }
        Ok(())
    }

    /// Runs `op`; `planned` is its share of `shaders::pass_plans` (None: its own `plan_for`).
    fn run_op(&mut self, op: &Op, planned: Option<&[shaders::Dispatch]>) -> Result<()> {
        self.check_op(op)?;
        // A MatMul's last partial 64-row tile of activation rows (all of a short prompt) as
        // mat-vecs, one per row: the tiled kernel costs as much for 1..64 rows as for 64, while
        // a mat-vec (with the simulator's one-row-per-lane geometry) costs about 1/60 of a tile
        // (SmolLM2 Q4_1, measured natively), so rows past the full tiles go one by one when
        // they are few.
        if let Op::MatMul { w, x, bias, out, p } = *op {
            let full = p.m / MATMUL_TILE_ROWS * MATMUL_TILE_ROWS;
            let rest = p.m - full;
            if p.m > 1 && rest > 0 && rest <= MAX_MATVEC_ROWS && sim_matvec_rows() && !self.variants.tensor_cores {
                if full > 0 {
                    self.run_op(&Op::MatMul { w, x, bias, out, p: MatMulParams { m: full, ..p } }, None)?;
                }
                for t in full..p.m {
                    let out_col = p.out_col + t * p.out_stride;
                    let row = MatMulParams { m: 1, x_row: p.x_row + t, out_col, out_stride: out_col + p.n, ..p };
                    self.run_op(&Op::MatMul { w, x, bias, out, p: row }, None)?;
                }
                return Ok(());
            }
        }
        let kernel = op.kernel_id();
        let plan = match planned {
            Some(plan) => plan.to_vec(),
            None => shaders::plan_for(op, self.variants)?,
        };
        if plan.is_empty() {
            return Ok(());
        }
        let file = shaders::kernel_file_for(kernel, self.variants)?;
        // A variant file runs with the GPU's plan (its dispatches depend on each other).
        let variant = file != shaders::kernel_file(kernel)?;
        let words = (shaders::scratch_bytes_for(op, self.variants) / 4) as usize;
        if self.scratch.len() < words {
            self.scratch.resize(words, 0);
        }
        let params = op.params_bytes();
        let mut uniform = vec![0u32; params.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut uniform)[..params.len()].copy_from_slice(params);
        // Binding i + 1 is slot i; views are raw, so a buffer bound twice is fine.
        let slots = shaders::slots_for(op, self.variants);
        let mut views = vec![View::EMPTY; slots.len() + 1];
        for (i, slot) in slots.iter().enumerate() {
            views[i + 1] = match slot {
                Slot::Buffer(id) => {
                    let buf = self
                        .buffers
                        .get_mut(id.0 as usize)
                        .and_then(|b| b.as_mut())
                        .ok_or_else(|| device_err(format!("unknown buffer {}", id.0)))?;
                    View::new(buf)
                }
                Slot::Dummy => View::new(&mut self.dummy),
                Slot::Scratch => View::new(&mut self.scratch),
            };
        }
        let program = self.programs.get(&file).ok_or_else(|| SimError::MissingKernel(file.clone()))?;
        let entries = shaders::entry_points_for(kernel, self.variants);
        let mem = Bindings { storage: &views, uniform: &uniform };
        let own = if variant { None } else { sim_matvec(op, program) };
        for d in plan {
            let (name, d) = match own {
                Some((name, workgroups)) => (name, shaders::Dispatch { entry: d.entry, workgroups }),
                None => (entries[d.entry], d),
            };
            let entry = program.entry(name).ok_or_else(|| SimError::MissingEntry { file: file.clone(), entry: name.into() })?;
            #[cfg(not(target_arch = "wasm32"))]
            let start = profiling().then(std::time::Instant::now);
            let counters = interp::dispatch(entry, &mem, d.workgroups, self.threads, self.cache_model);
            self.counters.add(&counters);
            #[cfg(not(target_arch = "wasm32"))]
            if let Some(start) = start {
                let seconds = start.elapsed().as_secs_f64();
                if let Ok(mut p) = PROFILE.lock() {
                    let row = p.get_or_insert_with(HashMap::new).entry(format!("{file} {name} {:?}", d.workgroups)).or_default();
                    row.calls += 1;
                    row.seconds += seconds;
                    row.warp_instructions += counters.warp_instructions;
                }
            }
        }
        Ok(())
    }
}

impl Device for SimDevice {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: format!("GPU simulator ({} lanes per warp, {} workers{})", interp::W, self.threads, self.variants.describe()),
            backend: "sim",
            max_binding_bytes: self.max_binding_bytes,
            host_memory: true,
        }
    }

    fn alloc(&mut self, _kind: BufferKind, label: &str, bytes: u64) -> Result<BufferId> {
        if bytes % 4 != 0 {
            return Err(device_err(format!("buffer `{label}`: {bytes} bytes is not a multiple of 4")));
        }
        if bytes > self.max_binding_bytes {
            return Err(EngineError::OutOfMemory(format!("buffer `{label}` of {bytes} bytes exceeds the binding limit")));
        }
        self.buffers.push(Some(vec![0; (bytes / 4) as usize]));
        self.allocated += bytes;
        Ok(BufferId(self.buffers.len() as u32 - 1))
    }

    fn free(&mut self, buf: BufferId) {
        if let Some(slot) = self.buffers.get_mut(buf.0 as usize) {
            if let Some(b) = slot.take() {
                self.allocated -= b.len() as u64 * 4;
            }
        }
    }

    fn write(&mut self, buf: BufferId, offset_bytes: u64, data: &[u8]) -> Result<()> {
        let words = self.buffers.get_mut(buf.0 as usize).and_then(|b| b.as_mut()).ok_or_else(|| device_err(format!("unknown buffer {}", buf.0)))?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
        let end = offset_bytes.checked_add(data.len() as u64).filter(|&e| e <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(device_err(format!("write of {} bytes at {offset_bytes} past buffer {} ({} bytes)", data.len(), buf.0, bytes.len())));
        };
        bytes[offset_bytes as usize..end as usize].copy_from_slice(data);
        Ok(())
    }

    fn run(&mut self, pass: &[Op]) -> Result<()> {
        // As WgpuDevice: the pass's plans (a planes matvec may skip its `quantize`).
        let plans = shaders::pass_plans(pass, self.variants)?;
        for (op, plan) in pass.iter().zip(&plans) {
            self.run_op(op, Some(plan))?;
        }
        Ok(())
    }

    fn read(&mut self, buf: BufferId, offset_bytes: u64, len: u64) -> ReadFuture<'_> {
        let result = self.buffer(buf).and_then(|words| {
            let bytes: &[u8] = bytemuck::cast_slice(words);
            let end = offset_bytes.checked_add(len).filter(|&e| e <= bytes.len() as u64);
            match end {
                Some(end) => Ok(bytes[offset_bytes as usize..end as usize].to_vec()),
                None => Err(device_err(format!("read of {len} bytes at {offset_bytes} past buffer {}", buf.0))),
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
}
