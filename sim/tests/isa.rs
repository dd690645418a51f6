//! Acceptance 1: the instruction set and the execution engine, through small WGSL programs
//! compiled here (the same compiler build.rs uses) and checked against plain Rust computing the
//! same thing: every opcode, divergence (nested if / loops with break and continue, early
//! return), barriers with warps narrower than the workgroup, atomics, the out-of-bounds policy,
//! and the compiler's error for unsupported WGSL.

use qwglm_sim::interp::{self, Bindings, View, W};
use qwglm_sim_lower::compile::compile_kernel;
use qwglm_sim_lower::isa::{Inst, KernelProgram};

fn compile(src: &str) -> KernelProgram {
    compile_kernel("test.wgsl", src, &|line| format!("test.wgsl:{line}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs entry `entry` of `src` with storage buffers at bindings 1.. and `uniform` at binding 0.
fn run(src: &str, entry: &str, buffers: &mut [Vec<u32>], uniform: &[u32], grid: [u32; 3], threads: usize) -> qwglm_sim::Counters {
    let program = compile(src);
    let entry = program.entry(entry).expect("entry");
    let mut views = vec![View::EMPTY];
    views.extend(buffers.iter_mut().map(|b| View::new(b)));
    interp::dispatch(entry, &Bindings { storage: &views, uniform }, grid, threads, true)
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

#[test]
fn every_alu_opcode_matches_rust() {
    let src = r#"
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let x = a[i];
    let y = a[i + 100u] | 1u;
    let sx = bitcast<i32>(x);
    let sy = bitcast<i32>(y);
    let fx = f32(x % 1000u) * 0.01 - 3.0;
    let fy = f32(y % 777u) * 0.02 + 0.5;
    let o = i * 64u;
    out[o + 0u] = x + y;
    out[o + 1u] = x - y;
    out[o + 2u] = x * y;
    out[o + 3u] = x / y;
    out[o + 4u] = x % y;
    out[o + 5u] = bitcast<u32>(sx / sy);
    out[o + 6u] = bitcast<u32>(sx % sy);
    out[o + 7u] = x & y;
    out[o + 8u] = x | y;
    out[o + 9u] = x ^ y;
    out[o + 10u] = x << (y % 32u);
    out[o + 11u] = x >> (y % 32u);
    out[o + 12u] = bitcast<u32>(sx >> (y % 32u));
    out[o + 13u] = ~x;
    out[o + 14u] = bitcast<u32>(-sx);
    out[o + 15u] = u32(x < y) + 2u * u32(x <= y) + 4u * u32(x > y) + 8u * u32(x >= y) + 16u * u32(x == y) + 32u * u32(x != y);
    out[o + 16u] = u32(sx < sy) + 2u * u32(sx <= sy) + 4u * u32(sx > sy) + 8u * u32(sx >= sy);
    out[o + 17u] = u32(fx < fy) + 2u * u32(fx <= fy) + 4u * u32(fx > fy) + 8u * u32(fx >= fy) + 16u * u32(fx == fy) + 32u * u32(fx != fy);
    out[o + 18u] = min(x, y);
    out[o + 19u] = max(x, y);
    out[o + 20u] = bitcast<u32>(min(sx, sy));
    out[o + 21u] = bitcast<u32>(max(sx, sy));
    out[o + 22u] = bitcast<u32>(fx + fy);
    out[o + 23u] = bitcast<u32>(fx - fy);
    out[o + 24u] = bitcast<u32>(fx * fy);
    out[o + 25u] = bitcast<u32>(fx / fy);
    out[o + 26u] = bitcast<u32>(fma(fx, fy, 0.25));
    out[o + 27u] = bitcast<u32>(min(fx, fy));
    out[o + 28u] = bitcast<u32>(max(fx, fy));
    out[o + 29u] = bitcast<u32>(abs(fx));
    out[o + 30u] = bitcast<u32>(-fx);
    out[o + 31u] = bitcast<u32>(exp(fx));
    out[o + 32u] = bitcast<u32>(log(fy));
    out[o + 33u] = bitcast<u32>(sqrt(fy));
    out[o + 34u] = bitcast<u32>(inverseSqrt(fy));
    out[o + 35u] = bitcast<u32>(sin(fx));
    out[o + 36u] = bitcast<u32>(cos(fx));
    out[o + 37u] = bitcast<u32>(exp2(fx));
    out[o + 38u] = bitcast<u32>(log2(fy));
    out[o + 39u] = bitcast<u32>(floor(fx));
    out[o + 40u] = bitcast<u32>(ceil(fx));
    out[o + 41u] = bitcast<u32>(round(fx));
    out[o + 42u] = bitcast<u32>(trunc(fx));
    out[o + 43u] = bitcast<u32>(tanh(fx));
    out[o + 44u] = bitcast<u32>(pow(fy, 1.5));
    out[o + 45u] = u32(fy * 10.0);
    out[o + 46u] = bitcast<u32>(i32(fx * 10.0));
    out[o + 47u] = bitcast<u32>(f32(sx));
    out[o + 48u] = extractBits(x, y % 32u, 5u);
    out[o + 49u] = bitcast<u32>(extractBits(sx, y % 28u, 4u));
    out[o + 50u] = insertBits(x, y, y % 24u, 8u);
    out[o + 51u] = countOneBits(x);
    out[o + 52u] = select(x, y, fx < fy);
    out[o + 53u] = bitcast<u32>(unpack2x16float(x).x) ^ bitcast<u32>(unpack2x16float(x).y);
    let v = vec4<u32>(x, y, x ^ y, 7u) >> vec4<u32>(0u, 4u, 8u, 12u);
    out[o + 54u] = dot(v, vec4<u32>(1u, 2u, 3u, 4u));
    out[o + 55u] = v[y % 4u];
    out[o + 56u] = bitcast<u32>(dot(vec4<f32>(fx, fy, 1.0, 2.0), vec4<f32>(fy, fx, 0.5, 0.25)));
    out[o + 57u] = bitcast<u32>(clamp(fx, -1.0, 1.0));
    out[o + 58u] = u32(!(x < y) && (y > 3u || x == 0u));
    out[o + 59u] = reverseBits(x) ^ countLeadingZeros(y) ^ (countTrailingZeros(y) << 8u);
    out[o + 60u] = bitcast<u32>(fract(fx));
    out[o + 61u] = u32(all(vec2<bool>(x > 5u, y > 5u))) + 2u * u32(any(vec2<bool>(x > y, y > x)));
    out[o + 62u] = bitcast<u32>(sign(fx)) ^ bitcast<u32>(abs(sx));
    out[o + 63u] = bitcast<u32>(f32(x >> 8u));
}
"#;
    let n = 128usize;
    let mut seed = 0x1234_5678u32;
    let a: Vec<u32> = (0..n + 100)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            if i % 9 == 0 { seed % 50 } else { seed }
        })
        .collect();
    let mut bufs = vec![a.clone(), vec![0; n * 64]];
    run(src, "main", &mut bufs, &[], [(n / 64) as u32, 1, 1], 2);
    let out = &bufs[1];
    for i in 0..n {
        let (x, y) = (a[i], a[i + 100] | 1);
        let (sx, sy) = (x as i32, y as i32);
        let fx = (x % 1000) as f32 * 0.01 - 3.0;
        let fy = (y % 777) as f32 * 0.02 + 0.5;
        let b = |c: bool| c as u32;
        let v = [x, y >> 4, (x ^ y) >> 8, 7 >> 12];
        let extract = |e: u32, off: u32, cnt: u32| (e >> off) & ((1u32 << cnt) - 1);
        let half = |h: u32| half::f16::from_bits(h as u16).to_f32().to_bits();
        let want: [u32; 64] = [
            x.wrapping_add(y),
            x.wrapping_sub(y),
            x.wrapping_mul(y),
            x / y,
            x % y,
            sx.wrapping_div(sy) as u32,
            sx.wrapping_rem(sy) as u32,
            x & y,
            x | y,
            x ^ y,
            x << (y % 32),
            x >> (y % 32),
            (sx >> (y % 32)) as u32,
            !x,
            sx.wrapping_neg() as u32,
            b(x < y) + 2 * b(x <= y) + 4 * b(x > y) + 8 * b(x >= y) + 16 * b(x == y) + 32 * b(x != y),
            b(sx < sy) + 2 * b(sx <= sy) + 4 * b(sx > sy) + 8 * b(sx >= sy),
            b(fx < fy) + 2 * b(fx <= fy) + 4 * b(fx > fy) + 8 * b(fx >= fy) + 16 * b(fx == fy) + 32 * b(fx != fy),
            x.min(y),
            x.max(y),
            sx.min(sy) as u32,
            sx.max(sy) as u32,
            f(fx + fy),
            f(fx - fy),
            f(fx * fy),
            f(fx / fy),
            f(fx.mul_add(fy, 0.25)),
            f(fx.min(fy)),
            f(fx.max(fy)),
            f(fx.abs()),
            f(-fx),
            f(fx.exp()),
            f(fy.ln()),
            f(fy.sqrt()),
            f(1.0 / fy.sqrt()),
            f(fx.sin()),
            f(fx.cos()),
            f(fx.exp2()),
            f(fy.log2()),
            f(fx.floor()),
            f(fx.ceil()),
            f(fx.round_ties_even()),
            f(fx.trunc()),
            f(fx.tanh()),
            f(fy.powf(1.5)),
            (fy * 10.0) as u32,
            (fx * 10.0) as i32 as u32,
            f(sx as f32),
            if y % 32 + 5 <= 32 { extract(x, y % 32, 5) } else { x >> (y % 32) },
            { let v = extract(x, y % 28, 4); if v & 8 != 0 { v | !15 } else { v } },
            { let off = y % 24; (x & !(0xff << off)) | ((y << off) & (0xff << off)) },
            x.count_ones(),
            if fx < fy { y } else { x },
            half(x & 0xffff) ^ half(x >> 16),
            v[0].wrapping_add(2 * v[1]).wrapping_add(3 * v[2]).wrapping_add(4 * v[3]),
            v[(y % 4) as usize],
            f(fx * fy + fy * fx + 0.5 + 0.5),
            f(fx.clamp(-1.0, 1.0)),
            b(!(x < y) && (y > 3 || x == 0)),
            x.reverse_bits() ^ y.leading_zeros() ^ (y.trailing_zeros() << 8),
            f(fx - fx.floor()),
            b(x > 5 && y > 5) + 2 * b(x > y || y > x),
            f(if fx > 0.0 { 1.0 } else if fx < 0.0 { -1.0 } else { 0.0 }) ^ sx.wrapping_abs() as u32,
            f((x >> 8) as f32),
        ];
        for (k, &w) in want.iter().enumerate() {
            let got = out[i * 64 + k];
            // Transcendentals may differ from Rust's libm by an ulp or two, as on GPUs.
            let close = got == w || (matches!(k, 31..=38 | 43 | 44) && (got as i64 - w as i64).abs() <= 4);
            assert!(close, "lane {i} op {k}: got {got:#x}, want {w:#x} (x {x:#x} y {y:#x})");
        }
    }
    // Every opcode the kernels use appears in the program above or in the kernels' own tests.
    let program = compile(src);
    let insts = &program.entries[0].insts;
    assert!(insts.iter().any(|i| matches!(i, Inst::Fma { .. })));
    assert!(insts.iter().any(|i| matches!(i, Inst::Gather { .. })));
    assert!(insts.iter().any(|i| matches!(i, Inst::InsertBits { .. })));
}

#[test]
fn nested_divergence_with_break_continue_and_return() {
    let src = r#"
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn classify(v: u32) -> u32 {
    if (v % 3u == 0u) {
        return 3u;
    }
    if (v % 5u == 0u) {
        return 5u;
    }
    return 1u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i % 11u == 10u) {
        out[i] = 0xdeadu;
        return;
    }
    var acc = 0u;
    for (var j = 0u; j < i % 17u + 3u; j++) {
        if (j % 2u == 1u) {
            continue;
        }
        var k = 0u;
        loop {
            if (k >= j) { break; }
            if ((i + k) % 7u == 0u) {
                k += 2u;
                continue;
            }
            acc += classify(i + j + k);
            k += 1u;
        }
        if (acc > 40u + i % 13u) {
            break;
        }
    }
    out[i] = acc;
}
"#;
    let n = 256usize;
    let mut bufs = vec![vec![0u32; n]];
    let counters = run(src, "main", &mut bufs, &[], [(n / 64) as u32, 1, 1], 1);
    let classify = |v: u32| if v % 3 == 0 { 3 } else if v % 5 == 0 { 5 } else { 1 };
    for i in 0..n as u32 {
        let want = if i % 11 == 10 {
            0xdead
        } else {
            let mut acc = 0u32;
            let mut j = 0;
            while j < i % 17 + 3 {
                if j % 2 == 1 {
                    j += 1;
                    continue;
                }
                let mut k = 0;
                while k < j {
                    if (i + k) % 7 == 0 {
                        k += 2;
                        continue;
                    }
                    acc += classify(i + j + k);
                    k += 1;
                }
                if acc > 40 + i % 13 {
                    break;
                }
                j += 1;
            }
            acc
        };
        assert_eq!(bufs[0][i as usize], want, "invocation {i}");
    }
    assert!(counters.simd_efficiency() < 1.0, "divergent code must show idle lanes");
}

#[test]
fn barriers_with_warps_narrower_than_the_workgroup() {
    // 256 threads = 4 warps of 64: the tree reduction and the reversed read cross warps, so a
    // missing or misplaced barrier gives wrong sums.
    assert!(W < 256);
    let src = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> tile: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(local_invocation_id) local: vec3<u32>) {
    let base = wid.x * 256u;
    tile[lid] = x[base + lid];
    workgroupBarrier();
    let mirrored = tile[255u - lid];
    workgroupBarrier();
    tile[lid] = mirrored * f32(local.y + 1u);
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            tile[lid] += tile[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[wid.x] = tile[0];
    }
}
"#;
    let groups = 5usize;
    let x: Vec<f32> = (0..groups * 256).map(|i| ((i * 37) % 101) as f32 * 0.5).collect();
    let mut bufs = vec![x.iter().map(|v| v.to_bits()).collect(), vec![0u32; groups]];
    let counters = run(src, "main", &mut bufs, &[], [groups as u32, 1, 1], 2);
    for g in 0..groups {
        let want: f32 = (0..256).map(|lid| x[g * 256 + 255 - lid] * (lid / 16 + 1) as f32).sum();
        let got = f32::from_bits(bufs[1][g]);
        assert!((got - want).abs() <= want.abs() * 1e-5, "group {g}: {got} vs {want}");
    }
    assert!(counters.barriers >= groups as u64 * 11);
}

#[test]
fn atomics_on_storage_and_workgroup_memory() {
    let src = r#"
@group(0) @binding(1) var<storage, read_write> counters: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read_write> tickets: array<u32>;
var<workgroup> local_count: atomic<u32>;
var<workgroup> local_max: atomic<i32>;

@compute @workgroup_size(128)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ticket = atomicAdd(&counters[0], 1u);
    tickets[gid.x] = ticket;
    atomicMax(&counters[1], gid.x * 3u);
    atomicMin(&counters[2], gid.x + 5u);
    atomicOr(&counters[3], 1u << (gid.x % 32u));
    atomicSub(&counters[4], 2u);
    atomicXor(&counters[5], gid.x);
    let old = atomicCompareExchangeWeak(&counters[6], 0u, gid.x + 1u);
    if (old.exchanged) {
        atomicAdd(&counters[7], 1u);
    }
    atomicAdd(&local_count, 1u);
    atomicMax(&local_max, -i32(lid));
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&counters[8], atomicLoad(&local_count));
        atomicAdd(&counters[9], u32(atomicLoad(&local_max) + 100));
    }
    atomicAnd(&counters[10], ~(1u << (gid.x % 32u)));
    atomicExchange(&counters[11], 77u);
}
"#;
    let groups = 6u32;
    let n = (groups * 128) as usize;
    let mut c = vec![0u32; 12];
    c[2] = u32::MAX;
    c[4] = 10_000;
    c[10] = u32::MAX;
    let mut bufs = vec![c, vec![0u32; n]];
    run(src, "main", &mut bufs, &[], [groups, 1, 1], 2);
    let c = &bufs[0];
    assert_eq!(c[0], n as u32);
    let mut tickets = bufs[1].clone();
    tickets.sort_unstable();
    assert_eq!(tickets, (0..n as u32).collect::<Vec<_>>(), "every ticket exactly once");
    assert_eq!(c[1], (n as u32 - 1) * 3);
    assert_eq!(c[2], 5);
    assert_eq!(c[3], u32::MAX);
    assert_eq!(c[4], 10_000 - 2 * n as u32);
    assert_eq!(c[5], (0..n as u32).fold(0, |a, b| a ^ b));
    assert!(c[6] >= 1 && c[6] <= n as u32);
    assert_eq!(c[7], 1, "exactly one compare-exchange wins");
    assert_eq!(c[8], n as u32);
    assert_eq!(c[9], groups * 100);
    assert_eq!(c[10], 0);
    assert_eq!(c[11], 77);
}

#[test]
fn out_of_bounds_reads_zero_and_writes_are_dropped() {
    let src = r#"
struct Params { n: u32, shift: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    // Reads past x's end give 0; writes past out's end vanish.
    out[i] = x[i + p.shift] + 1u;
    out[i + 1000000u] = 5u;
}
"#;
    let mut bufs = vec![(1..=40u32).collect(), vec![0xffff_ffffu32; 64]];
    run(src, "main", &mut bufs, &[64, 30], [1, 1, 1], 1);
    for i in 0..64u32 {
        let want = if i + 30 < 40 { i + 30 + 1 + 1 } else { 1 };
        assert_eq!(bufs[1][i as usize], want, "lane {i}");
    }
    assert_eq!(bufs[1].len(), 64);
}

#[test]
fn unsupported_wgsl_names_file_and_line() {
    let src = "@group(0) @binding(1) var<storage, read_write> out: array<u32>;\n\n@compute @workgroup_size(64)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>) {\n    switch (gid.x) {\n        case 0u: { out[0] = 1u; }\n        default: { out[1] = 2u; }\n    }\n}\n";
    let err = compile_kernel("bad.wgsl", src, &|line| format!("bad.wgsl:{line}")).expect_err("switch is not supported");
    let text = err.to_string();
    assert!(text.starts_with("bad.wgsl:5"), "{text}");
    assert!(text.contains("unsupported"), "{text}");
    let err = compile_kernel("bad.wgsl", "fn f( {", &|line| format!("bad.wgsl:{line}")).expect_err("syntax error");
    assert!(err.to_string().starts_with("bad.wgsl:1"), "{err}");
}

fn has(program: &KernelProgram, pred: impl Fn(&Inst) -> bool) -> bool {
    program.entries[0].insts.iter().any(pred)
}

#[test]
fn uniform_and_divergent_branches() {
    // Conditions on uniforms and workgroup ids run on the scalar unit as plain jumps; conditions
    // on the lane index diverge through the exec mask. Both kinds nest inside each other here.
    let src = r#"
struct Params { n: u32, limit: u32, scale: f32, flag: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * 128u + lid;
    var acc = 0u;
    let half_n = p.n / 2u + wid.x;
    for (var k = 0u; k < half_n; k++) {
        if (k == p.limit) {
            break;
        }
        if (p.flag != 0u) {
            acc += k * 2u;
        } else {
            acc += 1u;
        }
        if (lid % 3u == 0u) {
            if (k > wid.x + 2u) {
                acc += 100u;
                continue;
            }
            acc += 7u;
        }
        if (i % 5u == k % 5u) {
            break;
        }
    }
    let s = select(-p.scale, p.scale * 2.0, wid.x % 2u == 1u);
    out[i] = acc + u32(abs(s));
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::JumpIfZeroS { .. } | Inst::JumpIfNonZeroS { .. })), "uniform branches are scalar jumps");
    assert!(has(&program, |i| matches!(i, Inst::SLdUniform { .. })));
    assert!(has(&program, |i| matches!(i, Inst::SBin { .. } | Inst::SBinImm { .. })));
    assert!(has(&program, |i| matches!(i, Inst::SSelect { .. })));
    assert!(has(&program, |i| matches!(i, Inst::SUn { .. })));
    assert!(has(&program, |i| matches!(i, Inst::BinVS { .. } | Inst::Broadcast { .. })));
    assert!(has(&program, |i| matches!(i, Inst::AndCond { .. } | Inst::BreakIf { .. } | Inst::BreakUnless { .. })), "divergent branches use the exec mask");
    for (n, limit, flag) in [(20u32, 7u32, 1u32), (13, 100, 0), (0, 0, 1)] {
        let groups = 3u32;
        let mut bufs = vec![vec![0u32; (groups * 128) as usize]];
        let scale = 1.5f32;
        run(src, "main", &mut bufs, &[n, limit, scale.to_bits(), flag], [groups, 1, 1], 1);
        for w in 0..groups {
            for lid in 0..128u32 {
                let i = w * 128 + lid;
                let mut acc = 0u32;
                let mut k = 0u32;
                while k < n / 2 + w {
                    if k == limit {
                        break;
                    }
                    acc += if flag != 0 { k * 2 } else { 1 };
                    if lid % 3 == 0 {
                        if k > w + 2 {
                            acc += 100;
                            k += 1;
                            continue;
                        }
                        acc += 7;
                    }
                    if i % 5 == k % 5 {
                        break;
                    }
                    k += 1;
                }
                let s: f32 = if w % 2 == 1 { scale * 2.0 } else { -scale };
                assert_eq!(bufs[0][i as usize], acc + s.abs() as u32, "n {n} limit {limit} flag {flag} invocation {i}");
            }
        }
    }
}

#[test]
fn if_conversion_of_small_branches_and_early_returns() {
    // Early-return helpers and branches that only assign variables become selects: no mask
    // slots in the program, the same results as plain Rust.
    let src = r#"
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn pick(v: u32, limit: u32) -> u32 {
    if (v < limit) {
        return x[v];
    }
    if (v % 2u == 0u) {
        return v * 3u;
    }
    return 7u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    var y = pick(i, 40u);
    var z = 1u;
    if (i % 3u == 1u) {
        y += x[i % 7u];
        z = 2u;
    } else {
        z = y & 5u;
    }
    let both = i > 10u && i < 100u;
    out[i] = y * 10u + z + u32(both) * 1000u;
}
"#;
    let program = compile(src);
    assert!(
        !has(&program, |i| matches!(i, Inst::SaveExec { .. } | Inst::AndCond { .. } | Inst::Leave { .. })),
        "{:?}",
        program.entries[0].insts
    );
    assert!(has(&program, |i| matches!(i, Inst::Select { .. })));
    let n = 128usize;
    let x: Vec<u32> = (0..n as u32).map(|v| v * 7 + 1).collect();
    let mut bufs = vec![x.clone(), vec![0u32; n]];
    run(src, "main", &mut bufs, &[], [(n / 64) as u32, 1, 1], 1);
    for i in 0..n as u32 {
        let pick = if i < 40 { x[i as usize] } else if i % 2 == 0 { i * 3 } else { 7 };
        let (y, z) = if i % 3 == 1 { (pick + x[(i % 7) as usize], 2) } else { (pick, pick & 5) };
        let both = (i > 10 && i < 100) as u32;
        assert_eq!(bufs[1][i as usize], y * 10 + z + both * 1000, "invocation {i}");
    }
}

#[test]
fn unpack_superinstructions_match_rust() {
    // The quant-unpack shapes the peephole pass fuses: (w >> k) & m, f32((w >> k) & m) - c,
    // f32((w >> s) & m) - c with a per-lane shift, f32(w & m).
    let src = r#"
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let v = w[i];
    let s = (i % 2u) * 4u;
    let o = i * 6u;
    out[o] = (v >> 8u) & 0xffu;
    out[o + 1u] = bitcast<u32>(f32((v >> 12u) & 0xfu) - 8.0);
    out[o + 2u] = bitcast<u32>(f32((v >> s) & 0xfu) - 8.0);
    out[o + 3u] = bitcast<u32>(f32(v & 0x3fu));
    let scale = bitcast<f32>(w[(i + 1u) % 128u] & 0x3fffffffu);
    out[o + 4u] = bitcast<u32>(scale * (f32((v >> 4u) & 0xfu) - 8.0));
    out[o + 5u] = bitcast<u32>((f32((v >> s) & 0xfu) - 8.0) * scale);
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::ShrAnd { .. })));
    assert!(has(&program, |i| matches!(i, Inst::UnpackF { sub, .. } if *sub == 8f32.to_bits())));
    assert!(has(&program, |i| matches!(i, Inst::UnpackFVar { .. })));
    assert!(has(&program, |i| matches!(i, Inst::UnpackF { shift: 0, sub: 0, .. })));
    assert!(has(&program, |i| matches!(i, Inst::UnpackFMul { shift: 4, .. })));
    assert!(has(&program, |i| matches!(i, Inst::UnpackFVarMul { .. })));
    assert!(!has(&program, |i| matches!(i, Inst::Un { .. })), "every conversion fused");
    let n = 128usize;
    let mut seed = 0x9e37_79b9u32;
    let wv: Vec<u32> = (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        })
        .collect();
    let mut bufs = vec![wv.clone(), vec![0u32; n * 6]];
    run(src, "main", &mut bufs, &[], [(n / 64) as u32, 1, 1], 1);
    for i in 0..n {
        let v = wv[i];
        let s = (i as u32 % 2) * 4;
        let scale = f32::from_bits(wv[(i + 1) % 128] & 0x3fff_ffff);
        let want = [
            (v >> 8) & 0xff,
            f(((v >> 12) & 0xf) as f32 - 8.0),
            f(((v >> s) & 0xf) as f32 - 8.0),
            f((v & 0x3f) as f32),
            f(scale * (((v >> 4) & 0xf) as f32 - 8.0)),
            f((((v >> s) & 0xf) as f32 - 8.0) * scale),
        ];
        assert_eq!(&bufs[1][i * 6..i * 6 + 6], &want, "lane {i}");
    }
}

#[test]
fn guarded_reads_fuse_and_keep_bounds_masks_and_tails() {
    // `i < limit ? x[i] : 0` with a warp-uniform limit becomes one `LdStorageBelow`; checked
    // with contiguous and strided addresses, lanes masked off by a divergent branch, a limit
    // inside the buffer, and addresses past the buffer's end (which read 0 whatever the limit).
    let src = r#"
struct Params { limit: u32, stride: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn x_at(i: u32, limit: u32) -> u32 {
    if (i < limit) {
        return x[i];
    }
    return 0u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    out[i * 3u] = 7u;
    if (i % 3u != 1u) {
        out[i * 3u] = x_at(i, p.limit);
        out[i * 3u + 1u] = x_at(i * p.stride + 5u, p.limit);
    }
    out[i * 3u + 2u] = x_at(i + 2u, p.limit);
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::LdStorageBelow { .. })));
    assert!(!has(&program, |i| matches!(i, Inst::LdStorage { .. })), "every guarded read fused");
    let n = 192usize;
    let xv: Vec<u32> = (0..150u32).map(|v| v * 7 + 1).collect();
    for (limit, stride) in [(100u32, 1u32), (1000, 2), (150, 1), (0, 1), (130, 3)] {
        let mut bufs = vec![xv.clone(), vec![0u32; n * 3]];
        run(src, "main", &mut bufs, &[limit, stride, 0, 0], [(n / 64) as u32, 1, 1], 1);
        let at = |i: u32| if i < limit { xv.get(i as usize).copied().unwrap_or(0) } else { 0 };
        for i in 0..n as u32 {
            let got = &bufs[1][i as usize * 3..][..3];
            let want = if i % 3 != 1 { [at(i), at(i * stride + 5), at(i + 2)] } else { [7, 0, at(i + 2)] };
            assert_eq!(got, &want, "invocation {i}, limit {limit}, stride {stride}");
        }
    }
}

#[test]
fn multiply_adds_fuse_with_two_roundings() {
    // `x + a * b` becomes `MulAdd`, rounded like the separate multiply and add (never an FMA).
    let src = r#"
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let a = v[i * 4u];
    let b = v[i * 4u + 1u];
    let c = v[i * 4u + 2u];
    let e = v[i * 4u + 3u];
    out[i * 2u] = c + a * b;
    out[i * 2u + 1u] = dot(vec2<f32>(a, c), vec2<f32>(b, e)) + a * e;
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::MulAdd { .. })));
    let n = 128usize;
    let mut seed = 0x1234_5679u32;
    let vals: Vec<f32> = (0..n * 4)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 20001) as f32 / 1000.0 - 10.0 + 1.0 / 3.0
        })
        .collect();
    let mut bufs = vec![vals.iter().map(|x| x.to_bits()).collect(), vec![0u32; n * 2]];
    run(src, "main", &mut bufs, &[], [(n / 64) as u32, 1, 1], 1);
    for i in 0..n {
        let [a, b, c, e] = [vals[i * 4], vals[i * 4 + 1], vals[i * 4 + 2], vals[i * 4 + 3]];
        let p = a * b;
        let q = e * c;
        let want = [f(c + p), f((p + q) + a * e)];
        assert_eq!(&bufs[1][i * 2..i * 2 + 2], &want, "invocation {i}");
    }
}

#[test]
fn loads_at_consecutive_offsets_fuse_and_keep_bounds_and_masks() {
    // Loads from one address at consecutive offsets become one multi-word load: guarded reads
    // (`LdStorageBelowN`, every lane) and plain reads in a divergent branch (`LdStorageN`, the
    // active lanes only; the others keep their value). Checked with warps wholly inside the
    // buffer and the limit (the one-range-check path) and warps that cross either.
    let src = r#"
struct Params { limit: u32, stride: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn x_at(i: u32, limit: u32) -> u32 {
    if (i < limit) {
        return x[i];
    }
    return 0u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let b = i * p.stride;
    let limit = p.limit;
    let g0 = x_at(b, limit);
    let g1 = x_at(b + 1u, limit);
    let g2 = x_at(b + 2u, limit);
    let g3 = x_at(b + 3u, limit);
    let g4 = x_at(b + 4u, limit);
    let g5 = x_at(b + 5u, limit);
    let g6 = x_at(b + 6u, limit);
    let g7 = x_at(b + 7u, limit);
    var w = vec3<u32>(7u, 7u, 7u);
    if (i % 3u != 1u) {
        let c = b + 2u;
        let w0 = x[c];
        let w1 = x[c + 1u];
        let w2 = x[c + 2u];
        w = vec3<u32>(w0, w1 * 3u, w2 ^ 5u);
    }
    let o = i * 11u;
    out[o] = g0;
    out[o + 1u] = g1;
    out[o + 2u] = g2;
    out[o + 3u] = g3;
    out[o + 4u] = g4;
    out[o + 5u] = g5;
    out[o + 6u] = g6;
    out[o + 7u] = g7;
    out[o + 8u] = w.x;
    out[o + 9u] = w.y;
    out[o + 10u] = w.z;
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::LdStorageBelowN { n: 8, .. })), "the eight guarded reads fused: {:?}", program.entries[0].insts);
    assert!(has(&program, |i| matches!(i, Inst::LdStorageN { n: 3, .. })), "the three plain reads fused: {:?}", program.entries[0].insts);
    let n = 192usize;
    let xv: Vec<u32> = (0..300u32).map(|v| v * 7 + 1).collect();
    for (limit, stride) in [(1000u32, 1u32), (100, 1), (1000, 2), (250, 2), (0, 1), (130, 3), (u32::MAX, 1)] {
        let mut bufs = vec![xv.clone(), vec![0u32; n * 11]];
        run(src, "main", &mut bufs, &[limit, stride, 0, 0], [(n / 64) as u32, 1, 1], 1);
        let get = |i: u32| xv.get(i as usize).copied().unwrap_or(0);
        let at = |i: u32| if i < limit { get(i) } else { 0 };
        for i in 0..n as u32 {
            let b = i * stride;
            let got = &bufs[1][i as usize * 11..][..11];
            let mut want: Vec<u32> = (0..8).map(|j| at(b + j)).collect();
            if i % 3 != 1 {
                want.extend([get(b + 2), get(b + 3).wrapping_mul(3), get(b + 4) ^ 5]);
            } else {
                want.extend([7, 7, 7]);
            }
            assert_eq!(got, &want[..], "invocation {i}, limit {limit}, stride {stride}");
        }
    }
}

/// Function variables that every lane of the function stores together with warp-uniform values
/// live in scalar registers (`SMovIfAny`); one stored per lane, in per-lane control flow, or in a
/// loop that lanes leave at different times stays per lane. Uniform `break`/`continue` leave the
/// scalar unit running over code no lane runs, which must not change the variables.
#[test]
fn warp_uniform_variables() {
    let src = r#"
struct Params { n: u32, skip: u32, stop: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * 64u + lid;
    // Uniform counter, uniform break, read after the loop.
    var k = 0u;
    var sum = 0u;
    loop {
        if (k >= p.n) {
            break;
        }
        if (k == p.skip) {
            k += 1u;
            continue;
        }
        sum += k * 3u + lid;
        k += 1u;
    }
    // Uniform for loop with a uniform continue; its counter read after the loop.
    var j = 0u;
    var t = 0u;
    for (; j < p.n; j++) {
        if (j == p.skip) {
            continue;
        }
        t += j;
    }
    // Uniform value, stored in a per-lane branch: per lane.
    var v = 1u;
    if (lid % 2u == 0u) {
        v = 5u;
    }
    // Uniform counter of a loop that lanes leave at different times (per-lane break).
    var m = 0u;
    for (; m < p.n; m++) {
        if (m == lid % 7u + p.stop) {
            break;
        }
    }
    out[i * 6u] = sum;
    out[i * 6u + 1u] = k;
    out[i * 6u + 2u] = t;
    out[i * 6u + 3u] = j;
    out[i * 6u + 4u] = v;
    out[i * 6u + 5u] = m;
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::SMovIfAny { .. })), "uniform variables are scalar");
    for (n, skip, stop) in [(10u32, 3u32, 2u32), (0, 0, 0), (5, 9, 1), (12, 0, 4)] {
        let groups = 2u32;
        let mut bufs = vec![vec![0u32; (groups * 64 * 6) as usize]];
        run(src, "main", &mut bufs, &[n, skip, stop, 0], [groups, 1, 1], 1);
        for i in 0..groups * 64 {
            let lid = i % 64;
            let sum: u32 = (0..n).filter(|&k| k != skip).map(|k| k * 3 + lid).sum();
            let t: u32 = (0..n).filter(|&j| j != skip).sum();
            let v = if lid % 2 == 0 { 5 } else { 1 };
            let m = (0..n).find(|&m| m == lid % 7 + stop).unwrap_or(n);
            let got = &bufs[0][(i * 6) as usize..][..6];
            assert_eq!(got, &[sum, n, t, n, v, m], "n {n} skip {skip} stop {stop} lane {i}");
        }
    }
}

/// The superinstructions of the simulator's own mat-vec entry points: guarded and unguarded reads
/// at a warp-uniform address (`LdStorageBelowNS`), nibbles shifted by a uniform amount, scaled
/// and offset (`UnpackFSMulAdd`), signed bytes (`SExtF`); each against plain Rust.
#[test]
fn uniform_address_reads_and_unpacks() {
    let src = r#"
struct Params { n: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn x_at(i: u32, limit: u32) -> f32 {
    if (i < limit) {
        return x[i];
    }
    return 0.0;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var acc2 = 0.0;
    var bytes = 0.0;
    let cm = f32(lid) * 0.25 - 3.0;
    for (var g = 0u; g < p.n; g++) {
        let word = w[lid * p.n + g];
        let shift = (g % 2u) * 4u;
        let q = (vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu);
        let nib = (q >> vec4<u32>(shift)) & vec4<u32>(0xfu);
        let d = f32(lid + 1u) * 0.125;
        let dq = d * vec4<f32>(nib) + 0.5;
        let xs = vec4<f32>(x_at(4u * g, p.k), x_at(4u * g + 1u, p.k), x_at(4u * g + 2u, p.k), x_at(4u * g + 3u, p.k));
        acc += dot(dq, xs);
        acc2 += dot(d * vec4<f32>((q >> vec4<u32>(shift)) & vec4<u32>(0xfu)) + cm, xs);
        let s = vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
        bytes += dot(s, xs);
    }
    out[lid * 3u] = acc;
    out[lid * 3u + 1u] = bytes;
    out[lid * 3u + 2u] = acc2;
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::LdStorageBelowNS { .. })), "uniform guarded reads");
    assert!(has(&program, |i| matches!(i, Inst::UnpackFSMulAdd { .. })), "uniform-shift unpack");
    // (Chains of four of them on one word become `SExtDot4` / `UnpackFSDot4`: `dot4_chains_...`.)
    assert!(has(&program, |i| matches!(i, Inst::SExtDot { .. } | Inst::SExtDot4 { .. })), "signed bytes into the dot product");
    assert!(has(&program, |i| matches!(i, Inst::UnpackFSDot { .. } | Inst::UnpackFSDot4 { .. })), "unpack into the dot product");
    let n = 9u32;
    let mut seed = 7u32;
    let words: Vec<u32> = (0..64 * n)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed
        })
        .collect();
    let xs: Vec<f32> = (0..4 * n).map(|i| (i as f32 * 0.37).sin()).collect();
    // k cuts the activations short (the guarded reads give 0 past it).
    for k in [4 * n, 4 * n - 3, 5] {
        let mut bufs = vec![words.clone(), xs.iter().map(|v| v.to_bits()).collect(), vec![0u32; 192]];
        run(src, "main", &mut bufs, &[n, k, 0, 0], [1, 1, 1], 1);
        for lid in 0..64u32 {
            let (mut acc, mut acc2, mut bytes) = (0.0f32, 0.0f32, 0.0f32);
            let cm = lid as f32 * 0.25 - 3.0;
            for g in 0..n {
                let word = words[(lid * n + g) as usize];
                let shift = (g % 2) * 4;
                let x = |j: u32| if 4 * g + j < k { xs[(4 * g + j) as usize] } else { 0.0 };
                let d = (lid + 1) as f32 * 0.125;
                let dq: Vec<f32> = (0..4).map(|b| d * (((word >> (8 * b)) & 0xff) >> shift & 0xf) as f32 + 0.5).collect();
                let s: Vec<f32> = (0..4).map(|b| (((word << (24 - 8 * b)) as i32) >> 24) as f32).collect();
                // WGSL dot: ((a0 b0 + a1 b1) + a2 b2) + a3 b3, as the simulator lowers it.
                let dot = |a: &[f32]| ((a[0] * x(0) + a[1] * x(1)) + a[2] * x(2)) + a[3] * x(3);
                acc += dot(&dq);
                let dq2: Vec<f32> = (0..4).map(|b| d * (((word >> (8 * b)) & 0xff) >> shift & 0xf) as f32 + cm).collect();
                acc2 += dot(&dq2);
                bytes += dot(&s);
            }
            assert_eq!(f32::from_bits(bufs[2][(lid * 3) as usize]), acc, "k {k} lane {lid} (nibbles)");
            assert_eq!(f32::from_bits(bufs[2][(lid * 3 + 1) as usize]), bytes, "k {k} lane {lid} (bytes)");
            assert_eq!(f32::from_bits(bufs[2][(lid * 3 + 2) as usize]), acc2, "k {k} lane {lid} (nibbles into the dot)");
        }
    }
}

/// f64 -> nearest f16 value (ties to even; |x| >= 65520 overflows to infinity; subnormals in
/// steps of 2^-24), written out here independently of the simulator (which uses the `half`
/// crate): the reference for every f16 rounding.
fn f16_rne(x: f64) -> f64 {
    if x.is_nan() || x.is_infinite() {
        return x;
    }
    let a = x.abs();
    if a >= 65520.0 {
        return f64::INFINITY.copysign(x);
    }
    let quantum = if a < 2f64.powi(-14) {
        2f64.powi(-24)
    } else {
        let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        2f64.powi(e - 10)
    };
    ((a / quantum).round_ties_even() * quantum).copysign(x)
}

#[test]
fn f16_rounding_reference_agrees_with_half() {
    let mut seed = 0x2545_f491u32;
    for i in 0..200_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        // Random bits, and every f16 value's neighbourhood (ties between f16 values included).
        let x = if i % 2 == 0 { f32::from_bits(seed) } else { half::f16::from_bits((i / 2) as u16).to_f32() * (1.0 + ((seed % 5) as f32 - 2.0) * 2f32.powi(-11)) };
        if x.is_nan() {
            continue;
        }
        assert_eq!(f16_rne(x as f64) as f32, half::f16::from_f32(x).to_f32(), "{x:e}");
    }
}

/// f16 scalars and vectors: each conversion and arithmetic result is rounded to f16 (round to
/// nearest even, overflow to infinity, subnormals), f16 literals, f16 workgroup arrays read
/// back through dynamic indices, f16 `dot`: bit for bit against `f16_rne` on exact f64 math.
#[test]
fn f16_values_round_like_f16() {
    let src = r#"
enable f16;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> tile: array<vec4<f16>, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    let x = a[2u * lid];
    let y = a[2u * lid + 1u];
    let hx = f16(x);
    let hy = f16(y);
    let o = lid * 12u;
    out[o + 0u] = f32(hx);
    out[o + 1u] = f32(hx + hy);
    out[o + 2u] = f32(hx - hy);
    out[o + 3u] = f32(hx * hy);
    out[o + 4u] = f32(hx / hy);
    out[o + 5u] = f32(hx * 0.1h);
    out[o + 6u] = f32(f16(lid * 1001u));
    let v = vec4<f16>(vec4<f32>(x, y, x * 3.0, -y));
    tile[63u - lid] = v;
    workgroupBarrier();
    let w = tile[lid];
    out[o + 7u] = f32(w.x) + 1024.0 * f32(w.w);
    out[o + 8u] = f32(w.z);
    out[o + 9u] = f32(dot(v.xy, v.zw));
    out[o + 10u] = f32(-hx);
    out[o + 11u] = f32(max(hx, hy));
}
"#;
    let mut seed = 0x9e37_79b9u32;
    let mut vals = Vec::new();
    // Ties and near-ties at several exponents, overflow, subnormals, zero, random values.
    let specials = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65519.0, 65520.0, 1.0e5, 3.0e-8, 2.9e-8, 6.0e-5, -0.0, 0.0, 2048.0 + 1.0, 2048.0 + 3.0];
    for i in 0..128 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let r = (seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0;
        vals.push(match i % 4 {
            0 => specials[(i / 4) % specials.len()],
            1 => r * 100.0,
            2 => r * 1e-4,
            _ => r * 3.0,
        });
    }
    let mut bufs = vec![vals.iter().map(|&v| f(v)).collect::<Vec<u32>>(), vec![0u32; 64 * 12]];
    run(src, "main", &mut bufs, &[], [1, 1, 1], 1);
    let r = |x: f64| f16_rne(x);
    for lane in 0..64usize {
        let (x, y) = (vals[2 * lane], vals[2 * lane + 1]);
        let (hx, hy) = (r(x as f64), r(y as f64));
        let l2 = 63 - lane; // the lane whose vector this lane reads back
        let (x2, y2) = (vals[2 * l2], vals[2 * l2 + 1]);
        let v = [hx, hy, r(x as f64 * 3.0), r(-(y as f64))];
        let want = [
            hx,
            r(hx + hy),
            r(hx - hy),
            r(hx * hy),
            r(hx / hy),
            r(hx * r(0.1)),
            r(lane as f64 * 1001.0),
            (r(x2 as f64) as f32 + 1024.0 * r(-(y2 as f64)) as f32) as f64,
            r((x2 * 3.0) as f64),
            r(r(r(v[0] * v[2]) + r(v[1] * v[3]))),
            -hx,
            hx.max(hy),
        ];
        for (j, &w) in want.iter().enumerate() {
            let got = f32::from_bits(bufs[1][lane * 12 + j]);
            assert!(got.to_bits() == (w as f32).to_bits() || (got.is_nan() && w.is_nan()), "lane {lane} out {j}: x {x:e} y {y:e}: got {got:e}, want {w:e}");
        }
    }
}

/// Cooperative matrices: per 32-lane subgroup (two in each 64-lane warp, two warps), an f16 A
/// loaded row-major (`coopLoadT`) and an f16 B column-major (`coopLoad`) from a vec4<f16>
/// workgroup array (strides in vec4s, one of them from a uniform), an f32 C from workgroup
/// memory, `coopMultiplyAdd`, and the result stored row- and column-major to storage and to
/// workgroup memory: bit for bit against plain Rust summing k = 0..15 in order in f32.
#[test]
fn cooperative_matrices_load_multiply_add_and_store() {
    let src = r#"
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<uniform> u: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> halves: array<vec4<f16>, 1024>;
var<workgroup> tc: array<f32, 2048>;
var<workgroup> back: array<f32, 1024>;

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var i = lid; i < 1024u; i += 128u) {
        halves[i] = vec4<f16>(vec4<f32>(src[4u * i], src[4u * i + 1u], src[4u * i + 2u], src[4u * i + 3u]));
    }
    for (var i = lid; i < 2048u; i += 128u) {
        tc[i] = src[4096u + i];
    }
    workgroupBarrier();
    let sub = lid / 32u;
    let a = coopLoadT<coop_mat16x16<f16, A>>(&halves[sub * 80u + 1u], 5u);
    let b = coopLoad<coop_mat16x16<f16, B>>(&halves[512u + sub * 70u], u.x);
    let c = coopLoadT<coop_mat16x16<f32, C>>(&tc[sub * 300u + 7u], 17u);
    var d = coopMultiplyAdd(a, b, c);
    coopStoreT(d, &out[sub * 600u], 19u);
    coopStore(d, &out[2400u + sub * 600u], 21u);
    // Column-major into workgroup memory, back row-major: the transpose.
    coopStore(d, &back[sub * 256u], 16u);
    let t = coopLoadT<coop_mat16x16<f32, C>>(&back[sub * 256u], 16u);
    coopStoreT(t, &out[4800u + sub * 256u], 16u);
}
"#;
    let mut seed = 0x1357_9bdfu32;
    let vals: Vec<f32> = (0..4096 + 2048)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            ((seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0) * 4.0
        })
        .collect();
    let b_stride = 6u32; // vec4s: 24 halves between columns of B
    let mut bufs = vec![vals.iter().map(|&v| f(v)).collect::<Vec<u32>>(), vec![0u32; 4800 + 1024 + 16]];
    let program = compile(src);
    assert!(has(&program, |i| matches!(i, Inst::CoopMulAdd { f16: false, .. })));
    run(src, "main", &mut bufs, &[b_stride, 0, 0, 0], [1, 1, 1], 1);
    let halves: Vec<f32> = vals[..4096].iter().map(|&v| f16_rne(v as f64) as f32).collect();
    let mut want = vec![0f32; 4800 + 1024 + 16];
    for sub in 0..4usize {
        let a = |i: usize, k: usize| halves[4 * (sub * 80 + 1) + i * 20 + k];
        let b = |k: usize, j: usize| halves[4 * (512 + sub * 70) + j * 4 * b_stride as usize + k];
        for i in 0..16 {
            for j in 0..16 {
                let mut acc = vals[4096 + sub * 300 + 7 + i * 17 + j];
                for k in 0..16 {
                    acc += a(i, k) * b(k, j);
                }
                want[sub * 600 + i * 19 + j] = acc;
                want[2400 + sub * 600 + j * 21 + i] = acc;
                want[4800 + sub * 256 + j * 16 + i] = acc;
            }
        }
    }
    for (i, (&g, &w)) in bufs[1].iter().zip(&want).enumerate() {
        assert_eq!(g, w.to_bits(), "out[{i}]: got {}, want {w}", f32::from_bits(g));
    }
}

/// An f16 accumulator is rounded to f16 after the f32 sums; coop ops in non-full subgroups,
/// f16 in host-visible memory and matrices other than 16 x 16 are errors at file:line.
#[test]
fn cooperative_f16_accumulators_and_unsupported_f16_constructs() {
    let src = r#"
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> h: array<f16, 768>;
var<workgroup> o: array<f16, 256>;

@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32) {
    for (var i = lid; i < 768u; i += 32u) {
        h[i] = f16(src[i]);
    }
    workgroupBarrier();
    let a = coopLoadT<coop_mat16x16<f16, A>>(&h[0], 16u);
    let b = coopLoadT<coop_mat16x16<f16, B>>(&h[256], 16u);
    let c = coopLoadT<coop_mat16x16<f16, C>>(&h[512], 16u);
    coopStoreT(coopMultiplyAdd(a, b, c), &o[0], 16u);
    workgroupBarrier();
    for (var i = lid; i < 256u; i += 32u) {
        out[i] = f32(o[i]);
    }
}
"#;
    let vals: Vec<f32> = (0..768).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173).collect();
    let mut bufs = vec![vals.iter().map(|&v| f(v)).collect::<Vec<u32>>(), vec![0u32; 256]];
    run(src, "main", &mut bufs, &[], [1, 1, 1], 1);
    let hv: Vec<f32> = vals.iter().map(|&v| f16_rne(v as f64) as f32).collect();
    for i in 0..16 {
        for j in 0..16 {
            let mut acc = hv[512 + i * 16 + j];
            for k in 0..16 {
                acc += hv[i * 16 + k] * hv[256 + k * 16 + j];
            }
            let want = f16_rne(acc as f64) as f32;
            assert_eq!(f32::from_bits(bufs[1][i * 16 + j]), want, "({i}, {j})");
        }
    }

    let err = |src: &str| compile_kernel("bad.wgsl", src, &|line| format!("bad.wgsl:{line}")).expect_err("unsupported").to_string();
    let partial = "enable f16;\nenable wgpu_cooperative_matrix;\nvar<workgroup> h: array<f16, 256>;\n@compute @workgroup_size(48)\nfn main() {\n    let a = coopLoad<coop_mat16x16<f16, A>>(&h[0], 16u);\n    coopStore(a, &h[0], 16u);\n}\n";
    let e = err(partial);
    assert!(e.starts_with("bad.wgsl:") && e.contains("multiple of 32"), "{e}");
    let storage = "enable f16;\n@group(0) @binding(1) var<storage, read_write> out: array<f16>;\n@compute @workgroup_size(64)\nfn main() {\n    out[0] = 1.0h;\n}\n";
    let e = err(storage);
    assert!(e.starts_with("bad.wgsl:5") && e.contains("f16 in storage"), "{e}");
    let small = "enable wgpu_cooperative_matrix;\nvar<workgroup> m: array<f32, 64>;\n@compute @workgroup_size(64)\nfn main() {\n    let a = coopLoad<coop_mat8x8<f32, C>>(&m[0], 8u);\n    coopStore(a, &m[0], 8u);\n}\n";
    let e = err(small);
    assert!(e.starts_with("bad.wgsl:5") && e.contains("16 x 16"), "{e}");
}

#[test]
fn dot4_chains_read_their_activations_and_match_rust() {
    // The mat-vec shape of the Q4_1 and Q8_0 sim entry points: four dot-product steps on one
    // weight word, activations at a warp-uniform address (guarded and unguarded), with and
    // without an accumulator entering the chain.
    let src = r#"
struct Params { n: u32, k: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn x_at(i: u32, limit: u32) -> f32 {
    if (i < limit) {
        return x[i];
    }
    return 0.0;
}

struct X8 { lo: vec4<f32>, hi: vec4<f32> }

fn load8(b: u32, end: u32) -> X8 {
    return X8(
        vec4<f32>(x_at(b, end), x_at(b + 1u, end), x_at(b + 2u, end), x_at(b + 3u, end)),
        vec4<f32>(x_at(b + 4u, end), x_at(b + 5u, end), x_at(b + 6u, end), x_at(b + 7u, end)),
    );
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var acc3 = 1.5;
    var bytes = 0.0;
    let d = f32(lid + 1u) * 0.125;
    let m = f32(lid) * 0.25 - 3.0;
    for (var g = 0u; g < p.n; g++) {
        let w0 = w[2u * (lid * p.n + g)];
        let w1 = w[2u * (lid * p.n + g) + 1u];
        let shift = (g % 2u) * 4u;
        let lo = d * vec4<f32>((((vec4<u32>(w0) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu)) >> vec4<u32>(shift)) & vec4<u32>(0xfu)) + m;
        let hi = d * vec4<f32>((((vec4<u32>(w1) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu)) >> vec4<u32>(shift)) & vec4<u32>(0xfu)) + m;
        let b = 8u * g;
        let v = load8(b, p.k);
        acc += dot(lo, v.lo) + dot(hi, v.hi);
        // A uniform shift of 0, 4 or 8: with the byte shift of 24 every bit goes (32 in all).
        let shift3 = (g % 3u) * 4u;
        let u = d * vec4<f32>((((vec4<u32>(w0 ^ w1) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xffu)) >> vec4<u32>(shift3)) & vec4<u32>(0xfu)) + m;
        acc3 = acc3 + u.x * v.lo.x + u.y * v.lo.y + u.z * v.lo.z + u.w * v.lo.w;
        let s = vec4<f32>((vec4<i32>(bitcast<i32>(w0 ^ w1)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
        let ys = y[g];
        bytes += dot(s, ys);
    }
    out[lid * 3u] = acc;
    out[lid * 3u + 1u] = acc3;
    out[lid * 3u + 2u] = bytes;
}
"#;
    let program = compile(src);
    let dot4 = |acc_in: bool| has(&program, move |i| matches!(*i, Inst::UnpackFSDot4 { acc, .. } if (acc != qwglm_sim_lower::isa::NO_REG) == acc_in));
    assert!(dot4(false) && dot4(true), "unpack dot chains, with and without an accumulator in");
    assert!(has(&program, |i| matches!(*i, Inst::SExtDot4 { xbound, .. } if xbound == qwglm_sim_lower::isa::NO_REG)), "signed-byte dot chain, unguarded reads");
    assert!(!has(&program, |i| matches!(i, Inst::LdStorageBelowNS { .. } | Inst::UnpackFSDot { .. } | Inst::SExtDot { .. })), "every chain fused, the activation loads gone");
    // `bytes += dot(..)` and `acc += dot(..) + dot(..)`: the adds into the variables fused too.
    for c_in in [false, true] {
        assert!(has(&program, move |i| matches!(*i, Inst::AddMasked { c, .. } if (c != qwglm_sim_lower::isa::NO_REG) == c_in)), "AddMasked, c given: {c_in}");
    }
    let n = 7u32;
    let mut seed = 11u32;
    let words: Vec<u32> = (0..2 * 64 * n)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed
        })
        .collect();
    let xs: Vec<f32> = (0..8 * n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    // y is shorter than the loop reads: past its end reads 0.
    let ys: Vec<f32> = (0..4 * n - 4).map(|i| (i as f32 * 0.71).cos() * 1e-3).collect();
    for k in [8 * n, 8 * n - 3, 5] {
        let mut bufs = vec![words.clone(), xs.iter().map(|v| v.to_bits()).collect(), ys.iter().map(|v| v.to_bits()).collect(), vec![0u32; 192]];
        run(src, "main", &mut bufs, &[n, k, 0, 0], [1, 1, 1], 1);
        for lid in 0..64u32 {
            let (mut acc, mut acc3, mut bytes) = (0.0f32, 1.5f32, 0.0f32);
            let d = (lid + 1) as f32 * 0.125;
            let m = lid as f32 * 0.25 - 3.0;
            for g in 0..n {
                let i = (2 * (lid * n + g)) as usize;
                let (w0, w1) = (words[i], words[i + 1]);
                let shift = (g % 2) * 4;
                let deq = |wd: u32| -> Vec<f32> { (0..4).map(|b| d * ((((wd >> (8 * b)) & 0xff) >> shift) & 0xf) as f32 + m).collect() };
                let (lo, hi) = (deq(w0), deq(w1));
                let x = |j: u32| if 8 * g + j < k { xs[(8 * g + j) as usize] } else { 0.0 };
                let y = |j: u32| ys.get((4 * g + j) as usize).copied().unwrap_or(0.0);
                // WGSL dot: ((a0 b0 + a1 b1) + a2 b2) + a3 b3, as the simulator lowers it.
                let dot = |a: &[f32], v: &dyn Fn(u32) -> f32| ((a[0] * v(0) + a[1] * v(1)) + a[2] * v(2)) + a[3] * v(3);
                acc += dot(&lo, &x) + dot(&hi, &|j| x(j + 4));
                let u: Vec<f32> = (0..4).map(|b| d * (((((w0 ^ w1) >> (8 * b)) & 0xff) >> ((g % 3) * 4)) & 0xf) as f32 + m).collect();
                acc3 = acc3 + u[0] * x(0) + u[1] * x(1) + u[2] * x(2) + u[3] * x(3);
                let s: Vec<f32> = (0..4).map(|b| ((((w0 ^ w1) << (24 - 8 * b)) as i32) >> 24) as f32).collect();
                bytes += dot(&s, &y);
            }
            assert_eq!(f32::from_bits(bufs[3][(lid * 3) as usize]).to_bits(), acc.to_bits(), "k {k} lane {lid} (two chains)");
            assert_eq!(f32::from_bits(bufs[3][(lid * 3 + 1) as usize]).to_bits(), acc3.to_bits(), "k {k} lane {lid} (accumulator into the chain)");
            assert_eq!(f32::from_bits(bufs[3][(lid * 3 + 2) as usize]).to_bits(), bytes.to_bits(), "k {k} lane {lid} (signed bytes)");
        }
    }
}

#[test]
fn masked_accumulations_fuse_and_keep_inactive_lanes() {
    // `acc += a + b` and `acc += a` under a per-lane condition: the adds and the variable's
    // masked store become one `AddMasked`; lanes outside the branch keep their values.
    let src = r#"
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc = f32(lid) * 0.1;
    var acc2 = 1.0;
    for (var i = 0u; i < p.n; i++) {
        let a = x[lid * p.n + i];
        let b = x[(lid * p.n + i * 7u) % (64u * p.n)];
        if (lid % 3u != 0u) {
            acc2 += a + b;
            acc += a * b;
        }
    }
    out[2u * lid] = acc;
    out[2u * lid + 1u] = acc2;
}
"#;
    let program = compile(src);
    assert!(has(&program, |i| matches!(*i, Inst::AddMasked { c, .. } if c != qwglm_sim_lower::isa::NO_REG)), "acc2 += a + b fused");
    let n = 5u32;
    let xs: Vec<f32> = (0..64 * n).map(|i| (i as f32 * 0.61).sin() * 1e3 + 0.3).collect();
    let mut bufs = vec![xs.iter().map(|v| v.to_bits()).collect(), vec![0u32; 128]];
    run(src, "main", &mut bufs, &[n, 0, 0, 0], [1, 1, 1], 1);
    for lid in 0..64u32 {
        let (mut acc, mut acc2) = (lid as f32 * 0.1, 1.0f32);
        for i in 0..n {
            let a = xs[(lid * n + i) as usize];
            let b = xs[((lid * n + i * 7) % (64 * n)) as usize];
            if lid % 3 != 0 {
                acc2 += a + b;
                acc += a * b;
            }
        }
        assert_eq!(bufs[1][(2 * lid) as usize], acc.to_bits(), "lane {lid} (acc)");
        assert_eq!(bufs[1][(2 * lid + 1) as usize], acc2.to_bits(), "lane {lid} (acc2)");
    }
}
