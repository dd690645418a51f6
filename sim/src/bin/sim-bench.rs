//! Q4_0 mat-vec on the GPU simulator against a plain native Rust loop of the same math, both on
//! one thread: `cargo run --release -p qwglm-sim --bin sim-bench [n k]`. Prints ns/weight and the
//! ratio (issue 4's target: within 4x). Also prints the simulator's counters for the dispatch.

// Native only: it times threads and reads the model cache from disk.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use engine::device::{read_f32, BufferKind, Device};
    use engine::kernels::{MatMulParams, Op, WeightBuf};
    use engine::quant::{self, GgmlType};
    use qwglm_sim::{SimDevice, SimOptions};

    #[inline(always)]
    /// y = W x over GGUF Q4_0 blocks (f16 d, 16 bytes of nibbles: low = elements 0..16, high = 16..32).
    fn native_q4_0(blocks: &[u8], x: &[f32], n: usize, k: usize, y: &mut [f32]) {
        let per_row = k / 32;
        for (r, out) in y.iter_mut().enumerate().take(n) {
            let mut acc = 0.0f32;
            for b in 0..per_row {
                let block = &blocks[(r * per_row + b) * 18..][..18];
                let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                let xs = &x[b * 32..][..32];
                let mut s = 0.0f32;
                for j in 0..16 {
                    let q = block[2 + j];
                    s += ((q & 0xf) as f32 - 8.0) * xs[j] + ((q >> 4) as f32 - 8.0) * xs[j + 16];
                }
                acc += d * s;
            }
            *out = acc;
        }
    }

    /// The same loop compiled for AVX2 (the simulator's interpreter loop uses AVX2 when the CPU
    /// has it, so this is the like-for-like reference on such a host).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn native_q4_0_avx2(blocks: &[u8], x: &[f32], n: usize, k: usize, y: &mut [f32]) {
        native_q4_0(blocks, x, n, k, y)
    }

    fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        engine::session::now_or_never(f).expect("simulator futures are ready at once")
    }

    /// Prints a dispatch profile (`QWGLM_SIM_PROFILE`), per step of `steps` taking `wall` seconds.
    fn print_profile(what: &str, profile: &[(String, qwglm_sim::ProfileRow)], steps: usize, wall: f64) {
        if profile.is_empty() {
            return;
        }
        let total: f64 = profile.iter().map(|(_, r)| r.seconds).sum();
        println!("{what}: dispatches {:.1} ms of {:.1} ms per step", total * 1e3 / steps as f64, wall * 1e3 / steps as f64);
        for (key, r) in profile.iter().take(12) {
            println!(
                "  {:6.1}% {:8.1} ms/step {:5} calls {:8.2} M warp instr/step {:5.1} ns/warp instr  {key}",
                100.0 * r.seconds / total.max(1e-12),
                r.seconds * 1e3 / steps as f64,
                r.calls,
                r.warp_instructions as f64 / 1e6 / steps as f64,
                r.seconds * 1e9 / (r.warp_instructions.max(1) as f64)
            );
        }
    }

    /// SmolLM2-135M Q4_1 decode speed on the simulator with `threads` workers.
    fn smollm2_decode(threads: usize, tokens: usize) {
        let dir = std::env::var_os("QWGLM_MODELS").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/qwglm/models")
        });
        let files = engine::loader::open_model(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("SmolLM2 (scripts/fetch-models.sh)");
        let mut device: Box<dyn Device> = Box::new(SimDevice::new(SimOptions { threads, ..Default::default() }).expect("sim"));
        let opts = engine::model::ModelOptions { context: 256, chunk: 64, all_logits: false };
        let model = engine::model::Model::load(device.as_mut(), files.source.as_ref(), files.config.clone(), opts, &mut |_| {}).expect("load");
        let mut session = engine::session::Session::new(device, model);
        let t = Instant::now();
        let mut id = block(session.prefill_argmax(&[1, 2, 3, 4, 5, 6, 7, 8])).expect("prefill").0;
        let prefill = t.elapsed().as_secs_f64();
        print_profile("prefill", &qwglm_sim::take_profile(), 1, prefill);
        let t = Instant::now();
        for _ in 0..tokens {
            id = block(session.append_argmax_pipelined(id, 1)).expect("decode");
        }
        let decode = t.elapsed().as_secs_f64();
        // QWGLM_SIM_PROFILE set: where the time went, by kernel, entry and grid.
        print_profile("decode", &qwglm_sim::take_profile(), tokens, decode);
        println!(
            "SmolLM2-135M Q4_1, threads option {threads} (0 = all cores): prefill 8 tokens {:.2} s; decode {:.3} tok/s ({tokens} tokens in {:.2} s)",
            prefill,
            tokens as f64 / decode,
            decode
        );
    }

    pub fn main() {
        let argv: Vec<String> = std::env::args().collect();
        if let Some(at) = argv.iter().position(|a| a == "--dump") {
            // `--dump FILE [ENTRY]`: the bytecode of a kernel entry point, one instruction a line.
            let file = argv.get(at + 1).expect("--dump FILE [ENTRY]");
            let entry = argv.get(at + 2).map(String::as_str).unwrap_or("main");
            let programs = qwglm_sim::kernel_programs().expect("kernels");
            let prog = programs.iter().find(|p| &p.file == file).expect("no such kernel").entry(entry).expect("no such entry");
            for (i, inst) in prog.insts.iter().enumerate() {
                println!("{i:4} {inst:?}");
            }
            println!("{} registers, {} scalar registers, {} mask slots", prog.n_regs, prog.n_sregs, prog.n_masks);
            return;
        }
        if std::env::args().any(|a| a == "--smollm2") {
            // `--smollm2 1`: one worker only.
            let one = argv.iter().any(|a| a == "1");
            for threads in if one { &[1][..] } else { &[1, 0][..] } {
                let threads = *threads;
                smollm2_decode(threads, 4);
            }
            return;
        }
        let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        let (n, k) = (args.first().copied().unwrap_or(1024), args.get(1).copied().unwrap_or(4096));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n_blocks = n * k / 32;
        let mut disk: Vec<u8> = (0..n_blocks * 18).map(|_| next() as u8).collect();
        for block in disk.chunks_exact_mut(18) {
            let d = half::f16::from_f32(((next() % 1000) as f32 + 1.0) * 1e-5);
            block[..2].copy_from_slice(&d.to_le_bytes());
        }
        let x: Vec<f32> = (0..k).map(|_| (next() % 2000) as f32 / 1000.0 - 1.0).collect();

        let mut want = vec![0.0f32; n];

        let mut dev = SimDevice::new(SimOptions { threads: 1, ..Default::default() }).expect("sim");
        let packed = quant::repack(GgmlType::Q4_0, &disk).expect("repack");
        let w = dev.alloc(BufferKind::Weights, "w", packed.len() as u64).expect("alloc");
        dev.write(w, 0, &packed).expect("write");
        let xb = dev.alloc(BufferKind::Activations, "x", (k * 4) as u64).expect("alloc");
        dev.write(xb, 0, bytemuck::cast_slice(&x)).expect("write");
        let out = dev.alloc(BufferKind::Activations, "y", (n * 4) as u64).expect("alloc");
        let op = Op::MatMul {
            w: WeightBuf { buf: w, format: GgmlType::Q4_0, rows: n as u32, cols: k as u32 },
            x: xb,
            bias: None,
            out,
            p: MatMulParams::whole(1, n as u32, k as u32, 0, false),
        };
        dev.run(std::slice::from_ref(&op)).expect("warm-up");
        dev.reset_counters();
        dev.run(std::slice::from_ref(&op)).expect("run");
        let counters = dev.counters();
        // Native and simulator runs alternate, so both see the same machine load (it is shared).
        let (mut native, mut sim, mut native_avx2) = (f64::MAX, f64::MAX, f64::MAX);
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt");
        for _ in 0..7 {
            native = native.min(best_of(1, || native_q4_0(&disk, &x, n, k, &mut want)));
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                let mut y = vec![0.0f32; n];
                // SAFETY: the CPU has AVX2 and POPCNT (checked above).
                native_avx2 = native_avx2.min(best_of(1, || unsafe { native_q4_0_avx2(&disk, &x, n, k, &mut y) }));
                assert_eq!(y, want, "the AVX2 build of the native loop gives the same bits");
            }
            sim = sim.min(best_of(1, || dev.run(std::slice::from_ref(&op)).expect("run")));
        }
        let got = engine::session::now_or_never(read_f32(&mut dev, out, 0, n)).expect("sim reads are ready").expect("read");
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(err <= scale * 1e-4, "simulator and native loop disagree: max err {err} (scale {scale})");

        let weights = (n * k) as f64;
        println!("Q4_0 mat-vec {n} x {k}, one thread, best of 7 alternating runs each");
        println!("native Rust loop: {:.3} ms, {:.3} ns/weight", native * 1e3, native * 1e9 / weights);
        println!("simulator:        {:.3} ms, {:.3} ns/weight", sim * 1e3, sim * 1e9 / weights);
        println!("ratio:            {:.1}x", sim / native);
        if native_avx2 < f64::MAX {
            println!("native loop built for AVX2: {:.3} ms; ratio against it {:.1}x", native_avx2 * 1e3, sim / native_avx2);
        }
        println!(
            "counters: {} warp instructions ({:.1} per weight-lane), SIMD efficiency {:.1}%, {} words loaded, cache hit rate {:.1}%",
            counters.warp_instructions,
            counters.warp_instructions as f64 * 64.0 / weights,
            counters.simd_efficiency() * 100.0,
            counters.words_loaded,
            counters.cache_hit_rate() * 100.0
        );
        dev.set_cache_model(true);
        dev.reset_counters();
        dev.run(std::slice::from_ref(&op)).expect("run");
        println!("with the cache model: hit rate {:.1}% ({} lookups)", dev.counters().cache_hit_rate() * 100.0, dev.counters().cache_hits + dev.counters().cache_misses);
    }
}

fn main() {
    #[cfg(not(target_arch = "wasm32"))]
    native::main();
}
