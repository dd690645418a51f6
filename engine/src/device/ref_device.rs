//! `RefDevice`: runs every op through its reference function in `kernels::reference`.
//! The oracle for all other devices, and the engine's CPU path until a faster one exists.

use crate::device::{BufferId, BufferKind, Device, DeviceInfo, ReadFuture};
use crate::error::{EngineError, Result};
use crate::kernels::{reference as r, Op};

/// Buffers are u32 words so every view (f32, u32, bytes) is aligned.
#[derive(Default)]
pub struct RefDevice {
    buffers: Vec<Option<Vec<u32>>>,
    allocated: u64,
    /// Largest buffer allowed, like a GPU's binding limit (None: unlimited).
    max_binding_bytes: Option<u64>,
}

impl RefDevice {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reference device that refuses buffers over `bytes`, as a GPU with that binding limit
    /// would: tests the loader's splitting of big weights without a GPU.
    pub fn with_max_binding_bytes(bytes: u64) -> Self {
        Self { max_binding_bytes: Some(bytes), ..Self::default() }
    }

    fn slot(&self, id: BufferId) -> Result<&Vec<u32>> {
        self.buffers
            .get(id.0 as usize)
            .and_then(|b| b.as_ref())
            .ok_or_else(|| EngineError::Device(format!("unknown or in-use buffer {}", id.0)))
    }

    fn f32s(&self, id: BufferId) -> Result<&[f32]> {
        Ok(bytemuck::cast_slice(self.slot(id)?))
    }

    fn bytes(&self, id: BufferId) -> Result<&[u8]> {
        Ok(bytemuck::cast_slice(self.slot(id)?))
    }

    /// Takes a buffer out so it can be written while others are read; `put` returns it.
    fn take(&mut self, id: BufferId) -> Result<Vec<u32>> {
        self.buffers
            .get_mut(id.0 as usize)
            .and_then(|b| b.take())
            .ok_or_else(|| EngineError::Device(format!("buffer {} is unknown or aliased by this op", id.0)))
    }

    fn put(&mut self, id: BufferId, data: Vec<u32>) {
        self.buffers[id.0 as usize] = Some(data);
    }

    /// Runs `f` with one buffer taken out for writing; it is put back whatever `f` returns.
    fn with_out<T>(&mut self, out: BufferId, f: impl FnOnce(&Self, &mut [f32]) -> Result<T>) -> Result<T> {
        let mut data = self.take(out)?;
        let res = f(self, bytemuck::cast_slice_mut(&mut data));
        self.put(out, data);
        res
    }

    fn with_two_out<T>(
        &mut self,
        a: BufferId,
        b: BufferId,
        f: impl FnOnce(&Self, &mut [f32], &mut [f32]) -> Result<T>,
    ) -> Result<T> {
        let mut da = self.take(a)?;
        let db = self.take(b);
        let res = match db {
            Ok(mut db) => {
                let res = f(self, bytemuck::cast_slice_mut(&mut da), bytemuck::cast_slice_mut(&mut db));
                self.put(b, db);
                res
            }
            Err(e) => Err(e),
        };
        self.put(a, da);
        res
    }

    fn execute(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::Embed { table, ids, out, p } => self.with_out(*out, |d, o| {
                if (table.rows, table.cols) != (p.n_rows, p.hidden) {
                    return Err(EngineError::Kernel {
                        kernel: "embed".into(),
                        detail: format!("table is {}x{}, params say {}x{}", table.rows, table.cols, p.n_rows, p.hidden),
                    });
                }
                let ids: &[u32] = d.slot(*ids)?;
                r::embed(table.format, d.bytes(table.buf)?, ids, o, p)
            }),
            Op::RmsNorm { x, weight, out, p } => {
                self.with_out(*out, |d, o| r::rms_norm(d.f32s(*x)?, d.f32s(*weight)?, o, p))
            }
            Op::AddRmsNorm { residual, residual_out, x, weight, out, p } => {
                let n = (p.n_rows as usize) * (p.n_cols as usize);
                let input = self.f32s(*residual)?.get(..n).map(<[f32]>::to_vec);
                self.with_two_out(*residual_out, *out, |d, res, o| {
                    let input = input.ok_or_else(|| EngineError::Device(format!("residual holds fewer than {n} values")))?;
                    let Some(res) = res.get_mut(..n) else {
                        return Err(EngineError::Device(format!("residual_out holds fewer than {n} values")));
                    };
                    res.copy_from_slice(&input);
                    r::add_rms_norm(res, d.f32s(*x)?, d.f32s(*weight)?, o, p)
                })
            }
            Op::MatMul { w, x, bias, out, p } => self.with_out(*out, |d, o| {
                if (w.rows, w.cols) != (p.n, p.k) {
                    return Err(EngineError::Kernel {
                        kernel: "matmul".into(),
                        detail: format!("weight is {}x{}, params say {}x{}", w.rows, w.cols, p.n, p.k),
                    });
                }
                let bias = bias.map(|b| d.f32s(b)).transpose()?;
                r::matmul(w.format, d.bytes(w.buf)?, d.f32s(*x)?, bias, o, p)
            }),
            Op::RopeKvWrite { qkv, table, q_norm, k_norm, q_out, k_cache, v_cache, interleaved, p } => {
                let mut q = self.take(*q_out)?;
                let res = self.with_two_out(*k_cache, *v_cache, |d, kc, vc| {
                    let norms = match (q_norm, k_norm) {
                        (Some(qn), Some(kn)) => Some((d.f32s(*qn)?, d.f32s(*kn)?)),
                        _ => None,
                    };
                    let q: &mut [f32] = bytemuck::cast_slice_mut(&mut q);
                    r::rope_kv_write(d.f32s(*qkv)?, d.f32s(*table)?, norms, *interleaved, q, kc, vc, p)
                });
                self.put(*q_out, q);
                res
            }
            Op::Attention { q, k_cache, v_cache, out, p } => {
                self.with_out(*out, |d, o| r::attention(d.f32s(*q)?, d.f32s(*k_cache)?, d.f32s(*v_cache)?, o, p))
            }
            Op::RopeAttention { qkv, table, q_norm, k_norm, k_cache, v_cache, out, p } => {
                let mut q = vec![0f32; p.n_heads as usize * p.head_dim as usize];
                self.with_two_out(*k_cache, *v_cache, |d, kc, vc| {
                    let norms = match (q_norm, k_norm) {
                        (Some(qn), Some(kn)) => Some((d.f32s(*qn)?, d.f32s(*kn)?)),
                        _ => None,
                    };
                    r::rope_kv_write(d.f32s(*qkv)?, d.f32s(*table)?, norms, p.interleaved != 0, &mut q, kc, vc, &p.rope())
                })?;
                self.with_out(*out, |d, o| r::attention(&q, d.f32s(*k_cache)?, d.f32s(*v_cache)?, o, &p.attention()))
            }
            Op::SwiGlu { gate_up, out, p } => self.with_out(*out, |d, o| r::swiglu(d.f32s(*gate_up)?, o, p)),
            Op::Add { a, b, p } => self.with_out(*a, |d, xs| r::add(xs, d.f32s(*b)?, p)),
            Op::TopK { x, out, p } => {
                let words = r::top_k(self.f32s(*x)?, p)?;
                let mut data = self.take(*out)?;
                let res = match data.get_mut(..words.len()) {
                    Some(slots) => {
                        slots.copy_from_slice(&words);
                        Ok(())
                    }
                    None => Err(EngineError::Kernel { kernel: "top_k".into(), detail: "output too small".into() }),
                };
                self.put(*out, data);
                res
            }
            Op::Argmax { x, out, p } => {
                let idx = r::argmax(self.f32s(*x)?, p)?;
                let mut data = self.take(*out)?;
                let res = match data.first_mut() {
                    Some(slot) => {
                        *slot = idx;
                        Ok(())
                    }
                    None => Err(EngineError::Kernel { kernel: "argmax".into(), detail: "empty output".into() }),
                };
                self.put(*out, data);
                res
            }
        }
    }
}

impl Device for RefDevice {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            name: "reference (plain Rust)".into(),
            backend: "ref",
            max_binding_bytes: self.max_binding_bytes.unwrap_or(u64::MAX),
            host_memory: true,
        }
    }

    fn alloc(&mut self, _kind: BufferKind, label: &str, bytes: u64) -> Result<BufferId> {
        if bytes % 4 != 0 {
            return Err(EngineError::Device(format!("buffer `{label}`: size {bytes} is not a multiple of 4")));
        }
        if let Some(limit) = self.max_binding_bytes.filter(|&limit| bytes > limit) {
            return Err(EngineError::Device(format!("buffer `{label}` of {bytes} bytes exceeds the binding limit {limit}")));
        }
        let words = usize::try_from(bytes / 4)
            .map_err(|_| EngineError::OutOfMemory(format!("buffer `{label}` of {bytes} bytes")))?;
        let mut data = Vec::new();
        data.try_reserve_exact(words)
            .map_err(|_| EngineError::OutOfMemory(format!("buffer `{label}` of {bytes} bytes")))?;
        data.resize(words, 0);
        self.allocated += bytes;
        self.buffers.push(Some(data));
        Ok(BufferId((self.buffers.len() - 1) as u32))
    }

    fn free(&mut self, buf: BufferId) {
        if let Some(slot) = self.buffers.get_mut(buf.0 as usize) {
            if let Some(data) = slot.take() {
                self.allocated -= data.len() as u64 * 4;
            }
        }
    }

    fn write(&mut self, buf: BufferId, offset_bytes: u64, data: &[u8]) -> Result<()> {
        let words = self
            .buffers
            .get_mut(buf.0 as usize)
            .and_then(|b| b.as_mut())
            .ok_or_else(|| EngineError::Device(format!("write to unknown buffer {}", buf.0)))?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(words);
        let start = offset_bytes as usize;
        let end = start.checked_add(data.len()).filter(|&e| e <= bytes.len()).ok_or_else(|| {
            EngineError::Device(format!("write of {} bytes at {start} overflows buffer {}", data.len(), buf.0))
        })?;
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }

    fn run(&mut self, pass: &[Op]) -> Result<()> {
        pass.iter().try_for_each(|op| self.execute(op))
    }

    fn read(&mut self, buf: BufferId, offset_bytes: u64, len: u64) -> ReadFuture<'_> {
        let result = self.bytes(buf).and_then(|bytes| {
            let start = offset_bytes as usize;
            let end = start.checked_add(len as usize).filter(|&e| e <= bytes.len()).ok_or_else(|| {
                EngineError::Device(format!("read of {len} bytes at {start} overflows buffer {}", buf.0))
            })?;
            Ok(bytes[start..end].to_vec())
        });
        Box::pin(std::future::ready(result))
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
}
