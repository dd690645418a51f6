//! `WgpuDevice`: runs every op with its WGSL kernel from `shaders/` (see `crate::shaders`) on
//! wgpu: Vulkan natively (lavapipe in CI), WebGPU in the browser.
//!
//! Per pass (`run`): the params of all ops go into ONE uniform buffer, 256-aligned slots bound
//! with dynamic offsets; one command encoder and one compute pass hold every dispatch; one
//! submit. Pipelines are built lazily once per `KernelId`, bind groups cached by (kernel,
//! buffers), so a decode step creates no wgpu objects. `read` copies into a reusable staging
//! buffer and maps it asynchronously (natively the future polls the device; on the web the
//! browser drives it).
//!
//! Errors: wgpu reports validation, out-of-memory and device loss through callbacks; they are
//! collected and surface as `EngineError::{Device, OutOfMemory, DeviceLost}` from the next call.
//! Shapes and buffer sizes are checked before anything is encoded, so bad input is a typed
//! error, never a wgpu panic.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::device::{BufferId, BufferKind, Device, DeviceInfo, ReadFuture, ReadTicket};
use crate::error::{EngineError, Result};
use crate::kernels::{KernelId, Op};
use crate::shaders::{self, Slot};

/// Bytes bound for every params uniform (all params structs are smaller; checked in `run`).
const PARAMS_BINDING_BYTES: u64 = 64;

/// Construction options.
#[derive(Debug, Clone, Default)]
pub struct WgpuOptions {
    /// Use a binding limit below the adapter's (tests of the loader's weight splitting).
    pub max_binding_bytes: Option<u64>,
    /// Time every op on the GPU with timestamp queries (one compute pass per op, read back after
    /// each run: a profiling mode, not for production). Native only; also set by the
    /// `QWGLM_KERNEL_TIMES` environment variable. A table is printed when the device is dropped.
    pub kernel_times: bool,
    /// Keep the f32 decode matvecs where a planes variant exists (tests of both paths).
    pub no_planes_matvecs: bool,
    /// Run planes matvecs from this many weights (default `shaders::PLANES_MIN_WEIGHTS`): tests
    /// use 0 to run the planes path on small models.
    pub planes_min_weights: Option<u64>,
    /// Keep the 16-row prefill attention where the 64-row one fits (tests of both paths).
    pub no_wide_attention: bool,
}

struct Buffer {
    buffer: wgpu::Buffer,
    bytes: u64,
}

/// A kernel's bind group layout and one pipeline per entry point.
struct Kernel {
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
}

/// A device-owned buffer that grows on demand (params ring, attention scratch, staging).
struct Grown {
    buffer: wgpu::Buffer,
    bytes: u64,
}

type ErrorScopeFuture = Pin<Box<dyn Future<Output = Option<wgpu::Error>>>>;

pub struct WgpuDevice {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    max_buffer_bytes: u64,
    /// Distance between params slots: the adapter's uniform offset alignment (256 on WebGPU).
    params_stride: u64,
    buffers: Vec<Option<Buffer>>,
    allocated: u64,
    kernels: HashMap<KernelId, Kernel>,
    bind_groups: HashMap<(KernelId, Vec<Slot>), wgpu::BindGroup>,
    params: Grown,
    scratch: Grown,
    staging: Option<Grown>,
    /// The staging buffer is mapped or being mapped by a read whose future has not finished (it
    /// may have been dropped): the next read takes a fresh one.
    staging_busy: bool,
    /// Staging buffers of `run_then_read` tickets (a pool: decode keeps a few in flight).
    readbacks: Vec<ReadbackSlot>,
    /// Bound where a MatMul has no bias, so one layout serves both cases.
    dummy: wgpu::Buffer,
    /// Kernel variants this GPU runs: tensor-core MatMuls (`tensor_core_matmuls`), planes
    /// matvecs (native; `QWGLM_NO_PLANES=1` or `WgpuOptions::no_planes_matvecs` keeps the f32 ones).
    variants: shaders::Variants,
    /// Errors wgpu reported outside any scope (validation, internal), oldest first.
    errors: Arc<Mutex<Vec<EngineError>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// Out-of-memory scopes of allocations whose result was not ready yet (WebGPU resolves them
    /// asynchronously); awaited by the next `read`.
    pending_scopes: Vec<(String, ErrorScopeFuture)>,
    /// Host-side time split, native only, when `QWGLM_WGPU_PROFILE` is set (printed on drop).
    #[cfg(not(target_arch = "wasm32"))]
    profile: Option<HostProfile>,
    /// GPU time per op from timestamp queries, native only (`WgpuOptions::kernel_times`).
    #[cfg(not(target_arch = "wasm32"))]
    kernel_times: Option<KernelTimes>,
}

/// Accumulated GPU time per kernel and shape, from timestamp queries around each op.
#[cfg(not(target_arch = "wasm32"))]
struct KernelTimes {
    query_set: wgpu::QuerySet,
    capacity: u32,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    /// label → (ops, ns, weight bytes read)
    totals: HashMap<String, (u64, f64, u64)>,
}

#[cfg(not(target_arch = "wasm32"))]
impl KernelTimes {
    /// Row label of an op: kernel and, for weight ops, the weight shape; plus the weight bytes it reads.
    fn label(op: &Op) -> (String, u64) {
        match op {
            Op::MatMul { w, p, .. } => {
                let blocks = (w.rows as usize * w.cols as usize) / w.format.block_elems().max(1);
                // Prefill rows apart from decode rows: the same weight runs on different kernels.
                let rows = if p.m > 1 { " rows>1" } else { "" };
                (format!("{:?} {}x{}{rows}", op.kernel_id(), p.n, p.k), crate::quant::packed_len(w.format, blocks) as u64)
            }
            Op::Attention { p, .. } => (format!("Attention ctx<={}", (p.pos_offset + p.n_tokens).next_power_of_two()), 0),
            _ => (format!("{:?}", op.kernel_id()), 0),
        }
    }

    fn print(&self) {
        let total_ns: f64 = self.totals.values().map(|t| t.1).sum();
        let mut rows: Vec<_> = self.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        eprintln!("kernel times (GPU timestamps, one pass per op): total {:.2} ms", total_ns / 1e6);
        eprintln!("{:<34} {:>7} {:>10} {:>9} {:>6} {:>8}", "kernel", "ops", "total ms", "us/op", "%", "GB/s");
        for (label, &(ops, ns, bytes)) in rows {
            let gbps = if bytes > 0 && ns > 0.0 { format!("{:.0}", bytes as f64 / ns) } else { "-".into() };
            eprintln!(
                "{:<34} {:>7} {:>10.3} {:>9.2} {:>6.1} {:>8}",
                label,
                ops,
                ns / 1e6,
                ns / 1e3 / ops.max(1) as f64,
                100.0 * ns / total_ns.max(1.0),
                gbps
            );
        }
    }
}

/// Where the host spends a pass: validating/encoding/submitting it (`run`) versus waiting for
/// the GPU in a read (`poll` + map). Decode is one run and one read per token.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Default)]
struct HostProfile {
    runs: u64,
    dispatches: u64,
    run_s: f64,
    reads: u64,
    read_wait_s: f64,
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for WgpuDevice {
    fn drop(&mut self) {
        if let Some(t) = &self.kernel_times {
            t.print();
        }
        if let Some(p) = &self.profile {
            eprintln!(
                "wgpu profile: {} runs ({} dispatches) {:.1} ms encoding+submit ({:.1} us/dispatch); {} reads {:.1} ms waiting",
                p.runs,
                p.dispatches,
                p.run_s * 1e3,
                p.run_s * 1e6 / p.dispatches.max(1) as f64,
                p.reads,
                p.read_wait_s * 1e3
            );
        }
    }
}

/// Workgroup memory of shaders/common/matmul_coop_body.wgsl's largest entry (`wide`): activation
/// and weight tiles 4 x 10 KiB, store stage 8 KiB (above WebGPU's default 16 KiB; the H200 offers
/// exactly 48 KiB).
#[cfg(not(target_arch = "wasm32"))]
const COOP_MATMUL_WORKGROUP_BYTES: u32 = 4 * 10240 + 8192;

/// Whether MatMul runs on cooperative matrices (tensor cores): native only, where the adapter
/// offers them at 16x16x16 with f16 operands and f32 accumulators, shader-f16, 32-lane subgroups
/// (the kernel gives each 32 threads their own matrices) and the workgroup memory the kernel
/// needs. `QWGLM_NO_TENSOR_CORES=1` turns them off (A/B timing, the f32 path on the same GPU).
#[cfg(not(target_arch = "wasm32"))]
fn tensor_core_matmuls(adapter: &wgpu::Adapter) -> bool {
    if std::env::var_os("QWGLM_NO_TENSOR_CORES").is_some_and(|v| v != "0") {
        return false;
    }
    let info = adapter.get_info();
    let wanted = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    adapter.features().contains(wanted)
        && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && adapter.limits().max_compute_workgroup_storage_size >= COOP_MATMUL_WORKGROUP_BYTES
        && adapter.cooperative_matrix_properties().iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
}

/// Browsers' WebGPU has no cooperative matrices (wgpu's feature is native only).
#[cfg(target_arch = "wasm32")]
fn tensor_core_matmuls(_adapter: &wgpu::Adapter) -> bool {
    false
}

fn device_err(detail: impl Into<String>) -> EngineError {
    EngineError::Device(detail.into())
}

fn from_wgpu_error(err: wgpu::Error, context: &str) -> EngineError {
    match err {
        wgpu::Error::OutOfMemory { .. } => EngineError::OutOfMemory(context.to_string()),
        wgpu::Error::Validation { description, .. } => device_err(format!("{context}: {description}")),
        wgpu::Error::Internal { description, .. } => device_err(format!("{context}: internal error: {description}")),
    }
}

fn backend_name(backend: wgpu::Backend) -> &'static str {
    match backend {
        wgpu::Backend::Vulkan => "wgpu-vulkan",
        wgpu::Backend::Metal => "wgpu-metal",
        wgpu::Backend::Dx12 => "wgpu-dx12",
        wgpu::Backend::Gl => "wgpu-gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        _ => "wgpu",
    }
}

impl WgpuDevice {
    /// Opens the first high-performance adapter. No adapter is an error (with a hint), never a
    /// silent fallback to the CPU.
    pub async fn new(opts: WgpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                device_err(format!(
                    "no GPU adapter ({e}); natively wgpu needs a Vulkan driver (CI: apt-get install \
                     mesa-vulkan-drivers libvulkan1 for lavapipe), in the browser WebGPU must be enabled"
                ))
            })?;
        let adapter_info = adapter.get_info();
        let adapter_limits = adapter.limits();
        // WebGPU defaults, raised to what the adapter really offers for the two limits that decide
        // how weights are split.
        let tensor_cores = tensor_core_matmuls(&adapter);
        // Native only for now: the browser keeps the f32 matvecs until the planes kernels are
        // measured on WebGPU (Chrome has the packed dot products; SwiftShader emulates them).
        #[cfg(not(target_arch = "wasm32"))]
        let planes_matvecs = !opts.no_planes_matvecs && std::env::var_os("QWGLM_NO_PLANES").is_none();
        #[cfg(target_arch = "wasm32")]
        let planes_matvecs = false;
        // The 64-row prefill attention where the adapter offers its workgroup memory (browsers'
        // adapters commonly 32 KiB; WebGPU's default limit, 16 KiB, keeps the 16-row kernel).
        let wide_attention = !opts.no_wide_attention
            && std::env::var_os("QWGLM_NO_WIDE_ATTENTION").is_none()
            && adapter_limits.max_compute_workgroup_storage_size >= shaders::WIDE_PREFILL_ATTENTION_BYTES;
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: adapter_limits.max_storage_buffer_binding_size,
            max_buffer_size: adapter_limits.max_buffer_size,
            max_compute_workgroup_storage_size: if tensor_cores || wide_attention {
                adapter_limits.max_compute_workgroup_storage_size
            } else {
                wgpu::Limits::default().max_compute_workgroup_storage_size
            },
            ..Default::default()
        };
        #[cfg(not(target_arch = "wasm32"))]
        let want_times = (opts.kernel_times || std::env::var_os("QWGLM_KERNEL_TIMES").is_some())
            && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        #[cfg(target_arch = "wasm32")]
        let want_times = false;
        let mut features = if want_times { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        if tensor_cores {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("qwglm"),
                required_features: features,
                required_limits: limits.clone(),
                // SAFETY: the one experimental feature requested is cooperative matrices, used only by
                // shaders/matmul_coop_*.wgsl at the 16x16x16 f16 -> f32 shape the adapter reports.
                experimental_features: if tensor_cores {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
                ..Default::default()
            })
            .await
            .map_err(|e| device_err(format!("request_device on {}: {e}", adapter_info.name)))?;

        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut list) = sink.lock() {
                list.push(from_wgpu_error(e, "wgpu"));
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_sink.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });

        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding_bytes = opts.max_binding_bytes.map_or(max_binding, |cap| cap.min(max_binding)) & !3;
        let params_stride = (limits.min_uniform_buffer_offset_alignment as u64).max(PARAMS_BINDING_BYTES);
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let grown = |label: &str, bytes: u64, usage: wgpu::BufferUsages| Grown {
            buffer: device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false }),
            bytes,
        };
        let params = grown("params", params_stride * 64, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
        let scratch = grown("attention_partials", 4096, storage);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("no_bias"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        #[cfg(not(target_arch = "wasm32"))]
        let kernel_times = want_times.then(|| {
            let capacity = 4096u32;
            KernelTimes {
                query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel_times"),
                    ty: wgpu::QueryType::Timestamp,
                    count: capacity,
                }),
                capacity,
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kernel_times_resolve"),
                    size: capacity as u64 * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kernel_times_readback"),
                    size: capacity as u64 * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: queue.get_timestamp_period() as f64,
                totals: HashMap::new(),
            }
        });
        let variants = shaders::Variants { tensor_cores, planes_matvecs, planes_min_weights: opts.planes_min_weights, wide_attention };
        let info = DeviceInfo {
            name: format!("{}{}", adapter_info.name, variants.describe()),
            backend: backend_name(adapter_info.backend),
            max_binding_bytes,
            host_memory: false,
        };
        Ok(Self {
            device,
            queue,
            info,
            max_buffer_bytes: limits.max_buffer_size,
            params_stride,
            buffers: Vec::new(),
            allocated: 0,
            kernels: HashMap::new(),
            bind_groups: HashMap::new(),
            params,
            scratch,
            staging: None,
            staging_busy: false,
            readbacks: Vec::new(),
            dummy,
            variants,
            errors,
            lost,
            pending_scopes: Vec::new(),
            #[cfg(not(target_arch = "wasm32"))]
            profile: std::env::var_os("QWGLM_WGPU_PROFILE").map(|_| HostProfile::default()),
            #[cfg(not(target_arch = "wasm32"))]
            kernel_times,
        })
    }

    /// The adapter's description (driver, device type), for status displays.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.info.name, self.info.backend)
    }

    /// Reports device loss or the oldest error wgpu raised since the last call.
    fn take_error(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(EngineError::DeviceLost(reason));
        }
        let first = self.errors.lock().ok().and_then(|mut list| (!list.is_empty()).then(|| list.remove(0)));
        first.map_or(Ok(()), Err)
    }

    fn buffer(&self, id: BufferId) -> Result<&Buffer> {
        self.buffers
            .get(id.0 as usize)
            .and_then(|b| b.as_ref())
            .ok_or_else(|| device_err(format!("unknown buffer {}", id.0)))
    }

    fn create_buffer_checked(&mut self, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false });
        let mut result = Box::pin(scope.pop());
        // wgpu-core answers at once; WebGPU answers later, so the check moves to the next read.
        match crate::session::now_or_never(&mut result) {
            Some(Some(err)) => Err(from_wgpu_error(err, &format!("buffer `{label}` of {bytes} bytes"))),
            Some(None) => Ok(buffer),
            None => {
                let result: ErrorScopeFuture = result;
                self.pending_scopes.push((format!("buffer `{label}` of {bytes} bytes"), result));
                Ok(buffer)
            }
        }
    }

    /// Grows a device-owned buffer to at least `bytes`; growing drops the bind groups using it.
    fn ensure_grown(&mut self, which: GrownBuffer, bytes: u64) -> Result<()> {
        let current = match which {
            GrownBuffer::Params => self.params.bytes,
            GrownBuffer::Scratch => self.scratch.bytes,
        };
        if bytes <= current {
            return Ok(());
        }
        let bytes = bytes.next_power_of_two().max(bytes);
        let (label, usage) = match which {
            GrownBuffer::Params => ("params", wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST),
            GrownBuffer::Scratch => ("attention_partials", wgpu::BufferUsages::STORAGE),
        };
        if which == GrownBuffer::Scratch && bytes > self.info.max_binding_bytes {
            return Err(device_err(format!("attention scratch of {bytes} bytes exceeds the binding limit")));
        }
        let buffer = self.create_buffer_checked(label, bytes, usage)?;
        let grown = Grown { buffer, bytes };
        match which {
            GrownBuffer::Params => self.params = grown,
            GrownBuffer::Scratch => self.scratch = grown,
        }
        self.bind_groups.clear();
        Ok(())
    }

    fn ensure_kernel(&mut self, kernel: KernelId) -> Result<()> {
        if self.kernels.contains_key(&kernel) {
            return Ok(());
        }
        let source = shaders::kernel_source_for(kernel, self.variants)?;
        let label = format!("{kernel:?}");
        let (storage, writable) = shaders::storage_layout_for(kernel, self.variants);
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(PARAMS_BINDING_BYTES),
            },
            count: None,
        }];
        for i in 0..storage {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: (i + 1) as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: i < storage - writable },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.source.as_str().into()),
        });
        let pipelines = shaders::entry_points_for(kernel, self.variants)
            .iter()
            .map(|entry| {
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&format!("{label}::{entry}")),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .collect();
        let mut result = Box::pin(scope.pop());
        match crate::session::now_or_never(&mut result) {
            Some(Some(err)) => {
                return Err(EngineError::Kernel { kernel: label, detail: from_wgpu_error(err, "pipeline").to_string() });
            }
            Some(None) => {}
            // WebGPU answers later: a compile error then fails the next read.
            None => {
                let result: ErrorScopeFuture = result;
                self.pending_scopes.push((format!("pipeline {label}"), result));
            }
        }
        self.kernels.insert(kernel, Kernel { layout, pipelines });
        Ok(())
    }

    fn ensure_bind_group(&mut self, kernel: KernelId, slots: &[Slot]) -> Result<()> {
        let key = (kernel, slots.to_vec());
        if self.bind_groups.contains_key(&key) {
            return Ok(());
        }
        let layout = &self.kernels.get(&kernel).ok_or_else(|| device_err("kernel not built"))?.layout;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params.buffer,
                offset: 0,
                size: NonZeroU64::new(PARAMS_BINDING_BYTES),
            }),
        }];
        for (i, slot) in slots.iter().enumerate() {
            let buffer = match slot {
                Slot::Buffer(id) => &self.buffer(*id)?.buffer,
                Slot::Dummy => &self.dummy,
                Slot::Scratch => &self.scratch.buffer,
            };
            entries.push(wgpu::BindGroupEntry { binding: (i + 1) as u32, resource: buffer.as_entire_binding() });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(&format!("{kernel:?}")), layout, entries: &entries });
        self.bind_groups.insert(key, group);
        Ok(())
    }

    /// Checks an op's buffers against its shapes before it is encoded.
    fn check_op(&self, op: &Op) -> Result<()> {
        let kernel = format!("{:?}", op.kernel_id());
        if op.params_bytes().len() as u64 > PARAMS_BINDING_BYTES {
            return Err(EngineError::Kernel { kernel, detail: "params struct larger than its uniform slot".into() });
        }
        let needs = op.required_bytes().map_err(|detail| EngineError::Kernel { kernel: kernel.clone(), detail })?;
        for (id, what, bytes) in needs {
            let have = self.buffer(id)?.bytes;
            if have < bytes {
                return Err(EngineError::Kernel { kernel, detail: format!("{what} buffer has {have} bytes, needs {bytes}") });
            }
        }
        // WebGPU forbids a buffer bound writable and bound again in the same dispatch.
        let slots = shaders::slots_for(op, self.variants);
        let (_, writable) = shaders::storage_layout_for(op.kernel_id(), self.variants);
        let first_writable = slots.len().saturating_sub(writable);
        for (i, slot) in slots.iter().enumerate() {
            let Slot::Buffer(id) = slot else { continue };
            let again = slots[i + 1..].iter().position(|s| s == slot).map(|j| i + 1 + j);
            if let Some(j) = again.filter(|&j| i >= first_writable || j >= first_writable) {
                return Err(EngineError::Kernel {
                    kernel,
                    detail: format!("buffer {} is bound at {} and {} and written", id.0, i + 1, j + 1),
                });
            }
        }
        Ok(())
    }

    /// Copies `[start, end)` of a buffer into the staging buffer and starts mapping the first
    /// `bytes` of it.
    fn begin_read(&mut self, buf: BufferId, start: u64, end: u64) -> Result<PendingRead> {
        self.take_error()?;
        let source = self.buffer(buf)?.buffer.clone();
        let bytes = (end - start).max(4);
        if self.staging_busy || self.staging.as_ref().is_none_or(|s| s.bytes < bytes) {
            let size = bytes.next_power_of_two().max(4096);
            let buffer = self.create_buffer_checked("staging", size, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
            self.staging = Some(Grown { buffer, bytes: size });
        }
        let staging = self.staging.as_ref().map(|s| s.buffer.clone()).ok_or_else(|| device_err("no staging buffer"))?;
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read") });
        if end > start {
            encoder.copy_buffer_to_buffer(&source, start, &staging, 0, end - start);
        }
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.staging_busy = true;
        Ok(PendingRead { staging, bytes, mapped: rx })
    }
}

/// A staging buffer for `run_then_read`. `in_use` from the ticket's pass until its `redeem` has
/// unmapped it (a redeem future dropped half-way leaves it in use: leaked, never reused mapped).
struct ReadbackSlot {
    buffer: wgpu::Buffer,
    bytes: u64,
    in_use: bool,
    pending: Option<PendingReadback>,
}

struct PendingReadback {
    submission: wgpu::SubmissionIndex,
    mapped: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    mapped_bytes: u64,
    /// Bytes to skip (word alignment of the copy) and to return.
    skip: u64,
    len: u64,
}

/// A copy appended to a pass: `[start, end)` of `source` into the start of `staging`.
struct CopyOut {
    source: wgpu::Buffer,
    start: u64,
    end: u64,
    staging: wgpu::Buffer,
}

struct PendingRead {
    staging: wgpu::Buffer,
    bytes: u64,
    mapped: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrownBuffer {
    Params,
    Scratch,
}

impl Device for WgpuDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn alloc(&mut self, _kind: BufferKind, label: &str, bytes: u64) -> Result<BufferId> {
        self.take_error()?;
        if !bytes.is_multiple_of(4) {
            return Err(device_err(format!("buffer `{label}`: size {bytes} is not a multiple of 4")));
        }
        if bytes > self.info.max_binding_bytes {
            return Err(device_err(format!(
                "buffer `{label}` of {bytes} bytes exceeds the binding limit of {} bytes",
                self.info.max_binding_bytes
            )));
        }
        if bytes > self.max_buffer_bytes {
            return Err(EngineError::OutOfMemory(format!("buffer `{label}` of {bytes} bytes")));
        }
        // Zero-sized bindings are invalid; every buffer has at least one word.
        let size = bytes.max(4);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let buffer = self.create_buffer_checked(label, size, usage)?;
        self.allocated += bytes;
        self.buffers.push(Some(Buffer { buffer, bytes }));
        Ok(BufferId((self.buffers.len() - 1) as u32))
    }

    fn free(&mut self, buf: BufferId) {
        if let Some(slot) = self.buffers.get_mut(buf.0 as usize) {
            if let Some(b) = slot.take() {
                self.allocated -= b.bytes;
                self.bind_groups.retain(|(_, slots), _| !slots.contains(&Slot::Buffer(buf)));
                b.buffer.destroy();
            }
        }
    }

    fn write(&mut self, buf: BufferId, offset_bytes: u64, data: &[u8]) -> Result<()> {
        self.take_error()?;
        let b = self.buffer(buf)?;
        let end = offset_bytes.checked_add(data.len() as u64).filter(|&e| e <= b.bytes);
        if end.is_none() {
            return Err(device_err(format!("write of {} bytes at {offset_bytes} overflows buffer {}", data.len(), buf.0)));
        }
        if !offset_bytes.is_multiple_of(4) || !data.len().is_multiple_of(4) {
            return Err(device_err(format!("write of {} bytes at {offset_bytes}: GPU writes need whole words", data.len())));
        }
        if !data.is_empty() {
            self.queue.write_buffer(&b.buffer, offset_bytes, data);
        }
        Ok(())
    }

    fn run(&mut self, pass: &[Op]) -> Result<()> {
        self.run_profiled(pass, None).map(|_| ())
    }

    fn run_then_read(&mut self, pass: &[Op], buf: BufferId, offset_bytes: u64, len: u64) -> Result<ReadTicket> {
        let start = offset_bytes & !3;
        let end = offset_bytes.checked_add(len).map(|e| e.saturating_add(3) & !3);
        let b = self.buffer(buf)?;
        let Some(end) = end.filter(|&e| e <= b.bytes) else {
            return Err(device_err(format!("read of {len} bytes at {offset_bytes} overflows buffer {}", buf.0)));
        };
        let source = b.buffer.clone();
        let bytes = (end - start).max(4);
        let slot = match self.readbacks.iter().position(|s| !s.in_use && s.bytes >= bytes) {
            Some(i) => i,
            None => {
                let size = bytes.next_power_of_two().max(256);
                let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
                let buffer = self.create_buffer_checked("readback", size, usage)?;
                self.readbacks.push(ReadbackSlot { buffer, bytes: size, in_use: false, pending: None });
                self.readbacks.len() - 1
            }
        };
        let staging = self.readbacks[slot].buffer.clone();
        let copy = CopyOut { source, start, end, staging: staging.clone() };
        let submission = self.run_profiled(pass, Some(copy))?;
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let s = &mut self.readbacks[slot];
        s.in_use = true;
        s.pending = Some(PendingReadback { submission, mapped: rx, mapped_bytes: bytes, skip: offset_bytes - start, len });
        Ok(ReadTicket::Pending { slot })
    }

    fn redeem(&mut self, ticket: ReadTicket) -> ReadFuture<'_> {
        Box::pin(async move {
            let slot = match ticket {
                ReadTicket::Ready(bytes) => return Ok(bytes),
                ReadTicket::Pending { slot } => slot,
            };
            let pending = self.readbacks.get_mut(slot).and_then(|s| s.pending.take());
            let Some(PendingReadback { submission, mapped: rx, mapped_bytes, skip, len }) = pending else {
                return Err(device_err(format!("read ticket {slot} is unknown or already redeemed")));
            };
            #[cfg(not(target_arch = "wasm32"))]
            let waited = std::time::Instant::now();
            #[cfg(not(target_arch = "wasm32"))]
            if let Err(e) = self.device.poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None }) {
                self.take_error()?;
                return Err(device_err(format!("poll: {e}")));
            }
            #[cfg(target_arch = "wasm32")]
            let _ = submission;
            let mapped = rx.await;
            #[cfg(not(target_arch = "wasm32"))]
            if let Some(p) = self.profile.as_mut() {
                p.reads += 1;
                p.read_wait_s += waited.elapsed().as_secs_f64();
            }
            for (what, scope) in std::mem::take(&mut self.pending_scopes) {
                if let Some(err) = scope.await {
                    return Err(from_wgpu_error(err, &what));
                }
            }
            self.take_error()?;
            match mapped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(device_err(format!("map_async: {e}"))),
                Err(_) => return Err(EngineError::DeviceLost("map_async callback dropped".into())),
            }
            let staging = self.readbacks[slot].buffer.clone();
            let bytes = {
                let view = staging.slice(..mapped_bytes).get_mapped_range().map_err(|e| device_err(format!("mapped range: {e:?}")))?;
                view[skip as usize..(skip + len) as usize].to_vec()
            };
            staging.unmap();
            self.readbacks[slot].in_use = false;
            Ok(bytes)
        })
    }

    fn read(&mut self, buf: BufferId, offset_bytes: u64, len: u64) -> ReadFuture<'_> {
        // Copies must be word-aligned: read the covering words and cut.
        let start = offset_bytes & !3;
        let end = offset_bytes.checked_add(len).map(|e| e.saturating_add(3) & !3);
        let begun = match (end, self.buffer(buf)) {
            (Some(end), Ok(b)) if end <= b.bytes => self.begin_read(buf, start, end).map(|r| (r, end)),
            (_, Err(e)) => Err(e),
            _ => Err(device_err(format!("read of {len} bytes at {offset_bytes} overflows buffer {}", buf.0))),
        };
        Box::pin(async move {
            let (PendingRead { staging, bytes: mapped_bytes, mapped: rx }, end) = begun?;
            #[cfg(not(target_arch = "wasm32"))]
            let waited = std::time::Instant::now();
            #[cfg(not(target_arch = "wasm32"))]
            if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
                self.take_error()?;
                return Err(device_err(format!("poll: {e}")));
            }
            let mapped = rx.await;
            #[cfg(not(target_arch = "wasm32"))]
            if let Some(p) = self.profile.as_mut() {
                p.reads += 1;
                p.read_wait_s += waited.elapsed().as_secs_f64();
            }
            for (what, scope) in std::mem::take(&mut self.pending_scopes) {
                if let Some(err) = scope.await {
                    return Err(from_wgpu_error(err, &what));
                }
            }
            self.take_error()?;
            match mapped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(device_err(format!("map_async: {e}"))),
                Err(_) => return Err(EngineError::DeviceLost("map_async callback dropped".into())),
            }
            let bytes = {
                let view = staging.slice(..mapped_bytes).get_mapped_range().map_err(|e| device_err(format!("mapped range: {e:?}")))?;
                let skip = (offset_bytes - start) as usize;
                let take = (end - start) as usize;
                view[skip..take][..len as usize].to_vec()
            };
            staging.unmap();
            self.staging_busy = false;
            Ok(bytes)
        })
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
}

impl WgpuDevice {
    /// `run_pass` with the host-time profile.
    fn run_profiled(&mut self, pass: &[Op], copy: Option<CopyOut>) -> Result<wgpu::SubmissionIndex> {
        #[cfg(not(target_arch = "wasm32"))]
        let started = self.profile.is_some().then(std::time::Instant::now);
        let result = self.run_pass(pass, copy);
        #[cfg(not(target_arch = "wasm32"))]
        if let (Some(p), Some(t)) = (self.profile.as_mut(), started) {
            p.runs += 1;
            p.dispatches += pass.len() as u64;
            p.run_s += t.elapsed().as_secs_f64();
        }
        result
    }

    fn run_pass(&mut self, pass: &[Op], copy: Option<CopyOut>) -> Result<wgpu::SubmissionIndex> {
        self.take_error()?;
        // 1. Validate and plan everything before touching the GPU.
        let mut scratch_bytes = 0;
        for op in pass {
            self.check_op(op)?;
            scratch_bytes = scratch_bytes.max(shaders::scratch_bytes_for(op, self.variants));
        }
        let plans = shaders::pass_plans(pass, self.variants)?;
        // 2. One params slot per op, all written with one queue write.
        let stride = self.params_stride;
        self.ensure_grown(GrownBuffer::Params, stride * pass.len().max(1) as u64)?;
        self.ensure_grown(GrownBuffer::Scratch, scratch_bytes)?;
        let mut params = vec![0u8; stride as usize * pass.len()];
        for (i, op) in pass.iter().enumerate() {
            let bytes = op.params_bytes();
            params[i * stride as usize..i * stride as usize + bytes.len()].copy_from_slice(bytes);
        }
        if !params.is_empty() {
            self.queue.write_buffer(&self.params.buffer, 0, &params);
        }
        // 3. Pipelines and bind groups (cached after the first pass).
        let mut slots = Vec::with_capacity(pass.len());
        for op in pass {
            let kernel = op.kernel_id();
            self.ensure_kernel(kernel)?;
            let op_slots = shaders::slots_for(op, self.variants);
            self.ensure_bind_group(kernel, &op_slots)?;
            slots.push(op_slots);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if self.kernel_times.is_some() {
            return self.run_timed(pass, &plans, &slots, copy);
        }
        // 4. One encoder, one compute pass, one submit.
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("pass") });
        {
            let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("pass"), timestamp_writes: None });
            let mut current: Option<(KernelId, usize)> = None;
            for (i, (op, plan)) in pass.iter().zip(&plans).enumerate() {
                let kernel = op.kernel_id();
                let (Some(k), Some(group)) = (self.kernels.get(&kernel), self.bind_groups.get(&(kernel, slots[i].clone()))) else {
                    return Err(device_err(format!("{kernel:?}: pipeline or bind group missing")));
                };
                cpass.set_bind_group(0, group, &[(i as u64 * stride) as u32]);
                for d in plan {
                    // Consecutive ops often share a pipeline (q/k/v, gate/up): bind it once.
                    let pipeline = &k.pipelines[d.entry];
                    if current.as_ref() != Some(&(kernel, d.entry)) {
                        cpass.set_pipeline(pipeline);
                        current = Some((kernel, d.entry));
                    }
                    cpass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
                }
            }
        }
        if let Some(CopyOut { source, start, end, staging }) = copy {
            if end > start {
                encoder.copy_buffer_to_buffer(&source, start, &staging, 0, end - start);
            }
        }
        let submission = self.queue.submit([encoder.finish()]);
        self.take_error()?;
        Ok(submission)
    }

    /// Profiling variant of step 4 of `run_pass`: each op in its own compute pass between two
    /// timestamps; waits for the GPU and adds the times to `kernel_times`.
    #[cfg(not(target_arch = "wasm32"))]
    fn run_timed(&mut self, pass: &[Op], plans: &[Vec<shaders::Dispatch>], slots: &[Vec<Slot>], copy: Option<CopyOut>) -> Result<wgpu::SubmissionIndex> {
        let stride = self.params_stride;
        let Some(times) = self.kernel_times.as_ref() else {
            return Err(device_err("kernel times are off"));
        };
        let n_queries = (pass.len() as u32 * 2).min(times.capacity);
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("timed pass") });
        for (i, (op, plan)) in pass.iter().zip(plans).enumerate() {
            let kernel = op.kernel_id();
            let (Some(k), Some(group)) = (self.kernels.get(&kernel), self.bind_groups.get(&(kernel, slots[i].clone()))) else {
                return Err(device_err(format!("{kernel:?}: pipeline or bind group missing")));
            };
            let timed = (2 * i as u32 + 1) < n_queries;
            let timestamp_writes = timed.then(|| wgpu::ComputePassTimestampWrites {
                query_set: &times.query_set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            });
            let mut cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("op"), timestamp_writes });
            cpass.set_bind_group(0, group, &[(i as u64 * stride) as u32]);
            for d in plan {
                cpass.set_pipeline(&k.pipelines[d.entry]);
                cpass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
            }
        }
        if n_queries > 0 {
            encoder.resolve_query_set(&times.query_set, 0..n_queries, &times.resolve, 0);
            encoder.copy_buffer_to_buffer(&times.resolve, 0, &times.readback, 0, n_queries as u64 * 8);
        }
        if let Some(CopyOut { source, start, end, staging }) = copy {
            if end > start {
                encoder.copy_buffer_to_buffer(&source, start, &staging, 0, end - start);
            }
        }
        let submission = self.queue.submit([encoder.finish()]);
        self.take_error()?;
        if n_queries == 0 {
            return Ok(submission);
        }
        let readback = times.readback.clone();
        let slice = readback.slice(..n_queries as u64 * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(submission.clone()), timeout: None })
            .map_err(|e| device_err(format!("poll: {e}")))?;
        let ticks: Vec<u64> = {
            let view = slice.get_mapped_range().map_err(|e| device_err(format!("mapped range: {e:?}")))?;
            view.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
        };
        readback.unmap();
        let Some(times) = self.kernel_times.as_mut() else {
            return Ok(submission);
        };
        for (i, op) in pass.iter().enumerate().take(n_queries as usize / 2) {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * times.period_ns;
            let (label, bytes) = KernelTimes::label(op);
            let entry = times.totals.entry(label).or_insert((0, 0.0, 0));
            entry.0 += 1;
            entry.1 += ns;
            entry.2 += bytes;
        }
        Ok(submission)
    }
}
