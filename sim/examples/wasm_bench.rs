//! Mat-vec timing harness for the wasm build of the interpreter (the browser's engine runs the
//! same code): `node sim/examples/wasm_bench.mjs` builds this as a wasm cdylib (SIMD128, as the
//! extension) and times `run` from JS. Natively it is an empty program.
//!
//! Exports: `setup(format, n, k)` (0 = Q4_1, 1 = Q8_0, 2 = Q4_0; random blocks, SmolLM2-like
//! scales), `run()` (one m = 1 MatMul on the simulator, its bits summed into a checksum).

#[cfg(target_arch = "wasm32")]
mod wasm {
    use engine::device::{BufferKind, Device};
    use engine::kernels::{MatMulParams, Op, WeightBuf};
    use engine::quant::{self, GgmlType};
    use qwglm_sim::{SimDevice, SimOptions};

    static mut STATE: Option<(SimDevice, Op, engine::device::BufferId, usize)> = None;

    #[no_mangle]
    pub extern "C" fn setup(format: u32, n: u32, k: u32) {
        let (ty, block, scales) = match format {
            0 => (GgmlType::Q4_1, 20, 2),
            1 => (GgmlType::Q8_0, 34, 1),
            _ => (GgmlType::Q4_0, 18, 1),
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (n, k) = (n as usize, k as usize);
        let mut disk: Vec<u8> = (0..n * k / 32 * block).map(|_| next() as u8).collect();
        for b in disk.chunks_exact_mut(block) {
            for s in 0..scales {
                let d = half::f16::from_f32(((next() % 1000) as f32 + 1.0) * 1e-5);
                b[2 * s..2 * s + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        let x: Vec<f32> = (0..k).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();
        let mut dev = SimDevice::new(SimOptions { threads: 1, ..Default::default() }).expect("sim");
        let packed = quant::repack(ty, &disk).expect("repack");
        let w = dev.alloc(BufferKind::Weights, "w", packed.len() as u64).expect("alloc");
        dev.write(w, 0, &packed).expect("write");
        let xb = dev.alloc(BufferKind::Activations, "x", (k * 4) as u64).expect("alloc");
        dev.write(xb, 0, bytemuck::cast_slice(&x)).expect("write");
        let out = dev.alloc(BufferKind::Activations, "y", (n * 4) as u64).expect("alloc");
        let op = Op::MatMul {
            w: WeightBuf { buf: w, format: ty, rows: n as u32, cols: k as u32 },
            x: xb,
            bias: None,
            out,
            p: MatMulParams::whole(1, n as u32, k as u32, 0, false),
        };
        // SAFETY: single-threaded wasm.
        unsafe { *std::ptr::addr_of_mut!(STATE) = Some((dev, op, out, n)) };
    }

    #[no_mangle]
    pub extern "C" fn run() -> u32 {
        // SAFETY: single-threaded wasm.
        let (dev, op, out, n) = unsafe { (*std::ptr::addr_of_mut!(STATE)).as_mut().expect("setup first") };
        dev.run(std::slice::from_ref(op)).expect("run");
        let y = engine::session::now_or_never(engine::device::read_f32(dev, *out, 0, *n)).expect("ready").expect("read");
        y.iter().fold(0u32, |h, v| h.rotate_left(5) ^ v.to_bits())
    }

    #[no_mangle]
    pub extern "C" fn warp_instructions() -> f64 {
        // SAFETY: single-threaded wasm.
        let (dev, ..) = unsafe { (*std::ptr::addr_of_mut!(STATE)).as_ref().expect("setup first") };
        dev.counters().warp_instructions as f64
    }
}


