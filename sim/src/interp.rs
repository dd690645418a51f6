//! The warp interpreter: runs one entry point's bytecode over a grid of workgroups.
//!
//! A warp is W lanes; its register file is SoA (`regs[r][lane]`), so each instruction is a tight
//! loop over W words that the compiler vectorises, on the registers in place; scalar registers
//! hold warp-uniform values. A workgroup larger than W runs as several
//! warps that the scheduler interleaves at barriers: each warp runs until `Barrier` or `Halt`,
//! then the next one; the warp state (pc, exec mask, mask slots, registers) is the continuation.
//! Workgroups are spread over worker threads natively; in wasm they run on the calling thread.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use qwglm_sim_lower::isa::{
    AtomicOp, AtomicSpace, BinOp, Builtin, CoopSpace, EntryProgram, Inst, UnOp, COOP_DIM, COOP_REGS, NO_MASK, NO_REG, SUBGROUP,
};

/// Lanes per warp.
pub const W: usize = 64;
type Lanes = [u32; W];
// Cooperative matrices belong to 32-lane subgroups: a warp holds a whole number of them.
const _: () = assert!(W.is_multiple_of(SUBGROUP));
const ALL_LANES: u64 = u64::MAX;

/// A storage buffer as the kernels see it: words behind a raw pointer, because workgroups on
/// different workers write disjoint parts of the same buffer at once (as GPU threads do).
#[derive(Clone, Copy)]
pub struct View {
    ptr: *mut u32,
    len: usize,
}

// SAFETY: a View is only used during one dispatch, while the SimDevice keeps the buffer alive and
// unaliased by Rust references; kernels that race on a word get one of the values, as on a GPU.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    pub fn new(words: &mut [u32]) -> Self {
        Self { ptr: words.as_mut_ptr(), len: words.len() }
    }
    pub const EMPTY: View = View { ptr: std::ptr::null_mut(), len: 0 };

    #[inline(always)]
    fn get(&self, i: u32) -> u32 {
        if (i as usize) < self.len {
            // SAFETY: bounds checked above.
            unsafe { *self.ptr.add(i as usize) }
        } else {
            0
        }
    }
    #[inline(always)]
    fn set(&self, i: u32, v: u32) {
        if (i as usize) < self.len {
            // SAFETY: bounds checked above.
            unsafe { *self.ptr.add(i as usize) = v }
        }
    }
    fn atomic(&self, i: u32) -> Option<&AtomicU32> {
        // SAFETY: bounds checked; AtomicU32 has u32's layout.
        ((i as usize) < self.len).then(|| unsafe { AtomicU32::from_ptr(self.ptr.add(i as usize)) })
    }
}

/// What one dispatch reads and writes.
pub struct Bindings<'a> {
    /// Indexed by binding number (binding 0 is the uniform).
    pub storage: &'a [View],
    pub uniform: &'a [u32],
}

/// Execution counters for the GPU-status view.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Warp instructions executed.
    pub warp_instructions: u64,
    /// Sum over executed instructions of the lanes active.
    pub active_lanes: u64,
    pub workgroups: u64,
    pub barriers: u64,
    /// 32-bit words read from / written to storage memory.
    pub words_loaded: u64,
    pub words_stored: u64,
    /// Cache model (only while enabled): 64-byte line lookups per warp memory instruction.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.warp_instructions += o.warp_instructions;
        self.active_lanes += o.active_lanes;
        self.workgroups += o.workgroups;
        self.barriers += o.barriers;
        self.words_loaded += o.words_loaded;
        self.words_stored += o.words_stored;
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
    }
    /// Active lanes over lane slots issued (1.0 = no divergence, no idle lanes).
    pub fn simd_efficiency(&self) -> f64 {
        self.active_lanes as f64 / (self.warp_instructions as f64 * W as f64).max(1.0)
    }
    pub fn cache_hit_rate(&self) -> f64 {
        self.cache_hits as f64 / ((self.cache_hits + self.cache_misses) as f64).max(1.0)
    }
}

/// A 32 KiB, 4-way set-associative LRU cache of 64-byte lines per worker (an SM's L1).
struct Cache {
    tags: Vec<[u64; 4]>,
}

impl Cache {
    const SETS: usize = 32 * 1024 / 64 / 4;
    fn new() -> Self {
        Self { tags: vec![[u64::MAX; 4]; Self::SETS] }
    }
    /// Looks up a line; true on a hit. Ways are kept in MRU-first order.
    fn access(&mut self, binding: u8, word: u32) -> bool {
        let line = ((binding as u64) << 40) | (word as u64 / 16);
        let set = &mut self.tags[(line as usize) % Self::SETS];
        let hit = set.iter().position(|&t| t == line);
        let end = hit.unwrap_or(3);
        set.copy_within(0..end, 1);
        set[0] = line;
        hit.is_some()
    }
}

struct Warp {
    pc: usize,
    exec: u64,
    masks: Vec<u64>,
    regs: Vec<Lanes>,
    sregs: Vec<u32>,
    done: bool,
}

/// Per-worker state reused across workgroups.
struct Worker<'p> {
    prog: &'p EntryProgram,
    warps: Vec<Warp>,
    shared: Vec<u32>,
    counters: Counters,
    cache: Option<Cache>,
    /// The host has AVX2 (x86-64): `run_warp` runs a copy of the interpreter loop compiled for
    /// it, so the lane loops work on 8 words at a time (and variable shifts are one instruction).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2: bool,
}

/// Right operand of a two-operand op: a vector register, or one word for every lane (an
/// immediate or a scalar register). Generic so each op's lane loop is specialised for both.
trait Rhs: Copy {
    fn at(self, l: usize) -> u32;
}

impl Rhs for &Lanes {
    #[inline(always)]
    fn at(self, l: usize) -> u32 {
        self[l]
    }
}

impl Rhs for u32 {
    #[inline(always)]
    fn at(self, _: usize) -> u32 {
        self
    }
}

/// Register operands are used in place (no copies): the destination is borrowed mutably and
/// the sources shared, which needs the destination distinct from the sources. The compiler
/// writes fresh registers, so the copy below is a rare fallback. Macros, not functions taking
/// closures: the op's lane loop is then always inlined into the interpreter loop (and so
/// compiled for AVX2 in its AVX2 copy; a closure left out of line would be baseline code).
macro_rules! op1 {
    ($regs:expr, $d:expr, $a:expr, |$o:ident, $x:ident| $body:expr) => {{
        let (d, a): (usize, usize) = ($d, $a);
        let regs: &mut [Lanes] = $regs;
        let ta: Lanes;
        let base = regs.as_mut_ptr();
        // SAFETY: `check_program` verified both indices are inside the register file; the
        // destination is a distinct register or the source was copied first.
        let $x: &Lanes = if d == a {
            ta = unsafe { *base.add(a) };
            &ta
        } else {
            unsafe { &*base.add(a) }
        };
        let $o: &mut Lanes = unsafe { &mut *base.add(d) };
        $body
    }};
}

macro_rules! op2 {
    ($regs:expr, $d:expr, $a:expr, $b:expr, |$o:ident, $x:ident, $y:ident| $body:expr) => {{
        let (d, a, b): (usize, usize, usize) = ($d, $a, $b);
        let regs: &mut [Lanes] = $regs;
        let (ta, tb): (Lanes, Lanes);
        let base = regs.as_mut_ptr();
        // SAFETY: as in `op1`.
        let ($x, $y): (&Lanes, &Lanes) = if d == a || d == b {
            (ta, tb) = unsafe { (*base.add(a), *base.add(b)) };
            (&ta, &tb)
        } else {
            unsafe { (&*base.add(a), &*base.add(b)) }
        };
        let $o: &mut Lanes = unsafe { &mut *base.add(d) };
        $body
    }};
}

macro_rules! op3 {
    ($regs:expr, $d:expr, $a:expr, $b:expr, $c:expr, |$o:ident, $x:ident, $y:ident, $z:ident| $body:expr) => {{
        let (d, a, b, c): (usize, usize, usize, usize) = ($d, $a, $b, $c);
        let regs: &mut [Lanes] = $regs;
        let (ta, tb, tc): (Lanes, Lanes, Lanes);
        let base = regs.as_mut_ptr();
        // SAFETY: as in `op1`.
        let ($x, $y, $z): (&Lanes, &Lanes, &Lanes) = if d == a || d == b || d == c {
            (ta, tb, tc) = unsafe { (*base.add(a), *base.add(b), *base.add(c)) };
            (&ta, &tb, &tc)
        } else {
            unsafe { (&*base.add(a), &*base.add(b), &*base.add(c)) }
        };
        let $o: &mut Lanes = unsafe { &mut *base.add(d) };
        $body
    }};
}

/// `$body` with `$cvt` converting a masked field (at most `$mask`) to f32: as i32 when the mask
/// fits in 31 bits (exact then; x86 and V8's wasm SIMD have a one-instruction signed conversion
/// but emulate the unsigned one), else as u32.
macro_rules! by_mask {
    ($mask:expr, $cvt:ident => $body:expr) => {
        if $mask <= i32::MAX as u32 {
            #[inline(always)]
            fn $cvt(q: u32) -> f32 {
                q as i32 as f32
            }
            $body
        } else {
            #[inline(always)]
            fn $cvt(q: u32) -> f32 {
                q as f32
            }
            $body
        }
    };
}

/// `o = a + (b + c)` (`a + b` without `c`; `a` is `o` itself when `None`) in the lanes of
/// `exec`: the sums into a stack copy (so the lane loops vectorise), then the masked copy.
#[inline(always)]
fn add_masked(o: &mut Lanes, a: Option<&Lanes>, b: &Lanes, c: Option<&Lanes>, exec: u64) {
    let mut r = [0u32; W];
    let s: &Lanes = a.unwrap_or(o);
    match c {
        Some(c) => {
            for l in 0..W {
                r[l] = (f(s[l]) + (f(b[l]) + f(c[l]))).to_bits();
            }
        }
        None => {
            for l in 0..W {
                r[l] = (f(s[l]) + f(b[l])).to_bits();
            }
        }
    }
    masked_copy(o, &r, exec);
}

/// Lanes whose word is non-zero, as a mask (four lanes at a time so it vectorises).
#[inline(always)]
fn nonzero(v: &Lanes) -> u64 {
    let mut m = 0u64;
    for (q, c) in v.chunks_exact(4).enumerate() {
        let bits = (c[0] != 0) as u64 | ((c[1] != 0) as u64) << 1 | ((c[2] != 0) as u64) << 2 | ((c[3] != 0) as u64) << 3;
        m |= bits << (4 * q);
    }
    m
}

/// `d = v` in the lanes of `exec`.
#[inline(always)]
fn masked_copy(d: &mut Lanes, v: &Lanes, exec: u64) {
    if exec == ALL_LANES {
        *d = *v;
    } else {
        for l in 0..W {
            if exec >> l & 1 == 1 {
                d[l] = v[l];
            }
        }
    }
}

#[inline(always)]
fn f(x: u32) -> f32 {
    f32::from_bits(x)
}

/// One two-operand op on one word pair.
#[inline(always)]
fn bin1(op: BinOp, x: u32, y: u32) -> u32 {
    let mut d = [0u32; 1];
    bin(op, &mut d, &[x], y);
    d[0]
}

#[inline(always)]
fn bin<const N: usize, B: Rhs>(op: BinOp, d: &mut [u32; N], a: &[u32; N], b: B) {
    macro_rules! each {
        (|$x:ident, $y:ident| $e:expr) => {
            for l in 0..N {
                let ($x, $y) = (a[l], b.at(l));
                d[l] = $e;
            }
        };
    }
    match op {
        BinOp::IAdd => each!(|x, y| x.wrapping_add(y)),
        BinOp::ISub => each!(|x, y| x.wrapping_sub(y)),
        BinOp::IMul => each!(|x, y| x.wrapping_mul(y)),
        // WGSL: x / 0 = x, x % 0 = 0; i32::MIN / -1 = i32::MIN.
        BinOp::UDiv => each!(|x, y| if y == 0 { x } else { x / y }),
        BinOp::SDiv => each!(|x, y| if y == 0 { x } else { (x as i32).wrapping_div(y as i32) as u32 }),
        BinOp::URem => each!(|x, y| if y == 0 { 0 } else { x % y }),
        BinOp::SRem => each!(|x, y| if y == 0 { 0 } else { (x as i32).wrapping_rem(y as i32) as u32 }),
        BinOp::FAdd => each!(|x, y| (f(x) + f(y)).to_bits()),
        BinOp::FSub => each!(|x, y| (f(x) - f(y)).to_bits()),
        BinOp::FMul => each!(|x, y| (f(x) * f(y)).to_bits()),
        BinOp::FDiv => each!(|x, y| (f(x) / f(y)).to_bits()),
        BinOp::FRem => each!(|x, y| (f(x) - f(y) * (f(x) / f(y)).trunc()).to_bits()),
        BinOp::And => each!(|x, y| x & y),
        BinOp::Or => each!(|x, y| x | y),
        BinOp::Xor => each!(|x, y| x ^ y),
        BinOp::Shl => each!(|x, y| x.wrapping_shl(y)),
        BinOp::ShrU => each!(|x, y| x.wrapping_shr(y)),
        BinOp::ShrS => each!(|x, y| (x as i32).wrapping_shr(y) as u32),
        BinOp::IEq => each!(|x, y| (x == y) as u32),
        BinOp::INe => each!(|x, y| (x != y) as u32),
        BinOp::ULt => each!(|x, y| (x < y) as u32),
        BinOp::ULe => each!(|x, y| (x <= y) as u32),
        BinOp::UGt => each!(|x, y| (x > y) as u32),
        BinOp::UGe => each!(|x, y| (x >= y) as u32),
        BinOp::SLt => each!(|x, y| ((x as i32) < (y as i32)) as u32),
        BinOp::SLe => each!(|x, y| ((x as i32) <= (y as i32)) as u32),
        BinOp::SGt => each!(|x, y| ((x as i32) > (y as i32)) as u32),
        BinOp::SGe => each!(|x, y| ((x as i32) >= (y as i32)) as u32),
        BinOp::FEq => each!(|x, y| (f(x) == f(y)) as u32),
        BinOp::FNe => each!(|x, y| (f(x) != f(y)) as u32),
        BinOp::FLt => each!(|x, y| (f(x) < f(y)) as u32),
        BinOp::FLe => each!(|x, y| (f(x) <= f(y)) as u32),
        BinOp::FGt => each!(|x, y| (f(x) > f(y)) as u32),
        BinOp::FGe => each!(|x, y| (f(x) >= f(y)) as u32),
        BinOp::UMin => each!(|x, y| x.min(y)),
        BinOp::UMax => each!(|x, y| x.max(y)),
        BinOp::SMin => each!(|x, y| (x as i32).min(y as i32) as u32),
        BinOp::SMax => each!(|x, y| (x as i32).max(y as i32) as u32),
        BinOp::FMin => each!(|x, y| fmin(x, y)),
        BinOp::FMax => each!(|x, y| fmax(x, y)),
        BinOp::FPow => each!(|x, y| f(x).powf(f(y)).to_bits()),
        BinOp::FAtan2 => each!(|x, y| f(x).atan2(f(y)).to_bits()),
        BinOp::FStep => each!(|x, y| if f(y) >= f(x) { 1f32.to_bits() } else { 0 }),
    }
}

/// `min` as IEEE minNum / C `fminf` (a NaN operand gives the other; -0 below +0), branch-free
/// so the lanes vectorise: `f32::min` is a libm call per lane in wasm (whose `f32.min` has other
/// NaN rules).
#[inline(always)]
fn fmin(x: u32, y: u32) -> u32 {
    let (a, b) = (f(x), f(y));
    let m = if a == b { x | y } else if b < a { y } else { x };
    if a.is_nan() {
        y
    } else if b.is_nan() {
        x
    } else {
        m
    }
}

/// `max` as IEEE maxNum / C `fmaxf` (a NaN operand gives the other; +0 above -0), branch-free.
#[inline(always)]
fn fmax(x: u32, y: u32) -> u32 {
    let (a, b) = (f(x), f(y));
    let m = if a == b { x & y } else if b > a { y } else { x };
    if a.is_nan() {
        y
    } else if b.is_nan() {
        x
    } else {
        m
    }
}

/// f16 bits (low half of `h`) to f32 bits, branch-free so a warp's lanes vectorise: exponent and
/// mantissa shifted into place and scaled by 2^112 (exact for normals and subnormals); infinity
/// and NaN as the `half` crate gives them (NaN quietened, payload kept).
#[inline(always)]
fn f16_to_f32(h: u32) -> u32 {
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let man = h & 0x3ff;
    let finite = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = if man == 0 { 0x7f80_0000 } else { 0x7fc0_0000 | man << 13 };
    sign | if em >= 0x7c00 { special } else { finite }
}

#[inline(always)]
fn un<const N: usize>(op: UnOp, d: &mut [u32; N], a: &[u32; N]) {
    macro_rules! each {
        (|$x:ident| $e:expr) => {
            for l in 0..N {
                let $x = a[l];
                d[l] = $e;
            }
        };
    }
    macro_rules! float {
        (|$x:ident| $e:expr) => {
            each!(|x| {
                let $x = f(x);
                ($e).to_bits()
            })
        };
    }
    match op {
        UnOp::Not => each!(|x| !x),
        UnOp::LogicalNot => each!(|x| (x == 0) as u32),
        UnOp::INeg => each!(|x| x.wrapping_neg()),
        UnOp::FNeg => each!(|x| x ^ 0x8000_0000),
        UnOp::SAbs => each!(|x| (x as i32).wrapping_abs() as u32),
        UnOp::FAbs => each!(|x| x & 0x7fff_ffff),
        UnOp::FExp => float!(|x| x.exp()),
        UnOp::FExp2 => float!(|x| x.exp2()),
        UnOp::FLog => float!(|x| x.ln()),
        UnOp::FLog2 => float!(|x| x.log2()),
        UnOp::FSqrt => float!(|x| x.sqrt()),
        UnOp::FRsqrt => float!(|x| 1.0 / x.sqrt()),
        UnOp::FSin => float!(|x| x.sin()),
        UnOp::FCos => float!(|x| x.cos()),
        UnOp::FTan => float!(|x| x.tan()),
        UnOp::FTanh => float!(|x| x.tanh()),
        UnOp::FFloor => float!(|x| x.floor()),
        UnOp::FCeil => float!(|x| x.ceil()),
        UnOp::FRound => float!(|x| x.round_ties_even()),
        UnOp::FTrunc => float!(|x| x.trunc()),
        UnOp::FFract => float!(|x| x - x.floor()),
        UnOp::FSign => float!(|x| if x > 0.0 { 1.0f32 } else if x < 0.0 { -1.0 } else { 0.0 }),
        UnOp::SSign => each!(|x| (x as i32).signum() as u32),
        UnOp::U2F => each!(|x| (x as f32).to_bits()),
        UnOp::S2F => each!(|x| (x as i32 as f32).to_bits()),
        UnOp::F2U => each!(|x| f(x) as u32),
        UnOp::F2S => each!(|x| f(x) as i32 as u32),
        UnOp::ToBool => each!(|x| (x != 0) as u32),
        UnOp::Bool2F => each!(|x| if x != 0 { 1f32.to_bits() } else { 0 }),
        UnOp::CountOnes => each!(|x| x.count_ones()),
        UnOp::LeadingZeros => each!(|x| x.leading_zeros()),
        UnOp::TrailingZeros => each!(|x| x.trailing_zeros()),
        UnOp::ReverseBits => each!(|x| x.reverse_bits()),
        UnOp::F16LoToF32 => each!(|x| f16_to_f32(x & 0xffff)),
        UnOp::F16HiToF32 => each!(|x| f16_to_f32(x >> 16)),
        UnOp::QuantizeF16 => each!(|x| half::f16::from_f32(f(x)).to_f32().to_bits()),
    }
}

/// `extractBits` per WGSL: offset and count clamped to 32 bits.
fn extract_bits(e: u32, off: u32, cnt: u32, signed: bool) -> u32 {
    let o = off.min(32);
    let c = cnt.min(32 - o);
    if c == 0 {
        return 0;
    }
    let v = if o == 32 { 0 } else { e >> o };
    let mask = if c == 32 { u32::MAX } else { (1u32 << c) - 1 };
    let v = v & mask;
    if signed && c < 32 && v >> (c - 1) & 1 == 1 {
        v | !mask
    } else {
        v
    }
}

fn insert_bits(e: u32, n: u32, off: u32, cnt: u32) -> u32 {
    let o = off.min(32);
    let c = cnt.min(32 - o);
    if c == 0 {
        return e;
    }
    let mask = (if c == 32 { u32::MAX } else { (1u32 << c) - 1 }).wrapping_shl(o);
    (e & !mask) | (n.wrapping_shl(o) & mask)
}

enum Stop {
    Barrier,
    Halt,
}

/// Checks every register, scalar register, mask slot, table range and jump target of `prog`
/// once per dispatch, so the interpreter can index its files without bounds checks.
fn check_program(prog: &EntryProgram) {
    let (nr, ns, nm) = (prog.n_regs as usize, prog.n_sregs.max(1) as usize, prog.n_masks as usize);
    let r = |x: u32| assert!((x as usize) < nr, "register {x} out of range ({nr})");
    let s = |x: u32| assert!((x as usize) < ns, "scalar register {x} out of range ({ns})");
    let m = |x: u16| assert!((x as usize) < nm, "mask slot {x} out of range ({nm})");
    let t = |at: u32, len: u32| {
        assert!(len > 0 && (at as usize + len as usize) <= prog.tables.len(), "table {at}+{len} out of range");
        prog.tables[at as usize..][..len as usize].iter().for_each(|&x| r(x));
    };
    let to = |x: u32| assert!((x as usize) < prog.insts.len(), "jump target {x} out of range");
    // Multi-word loads write through their table's registers at once: no register twice.
    let distinct = |at: u32, len: u32| {
        let regs = &prog.tables[at as usize..][..len as usize];
        assert!(regs.iter().enumerate().all(|(i, x)| !regs[..i].contains(x)), "table {at}+{len} repeats a register");
    };
    assert!(matches!(prog.insts.last(), Some(Inst::Halt | Inst::Jump { .. })), "program must end in Halt");
    for &(_, x) in &prog.builtins {
        r(x);
    }
    for &(_, x) in &prog.scalar_builtins {
        s(x);
    }
    for inst in &prog.insts {
        match *inst {
            Inst::Movi { d, .. } => r(d),
            Inst::Mov { d, s: a } | Inst::MovMasked { d, s: a } | Inst::Un { d, a, .. } | Inst::BinImm { d, a, .. } => (r(d), r(a)).1,
            Inst::ShrAnd { d, a, .. } | Inst::UnpackF { d, a, .. } | Inst::SExtF { d, a, .. } => (r(d), r(a)).1,
            Inst::UnpackFMul { d, a, m: b, .. } => (r(d), r(a), r(b)).2,
            Inst::UnpackFSMulAdd { d, a, s: sh, m: b, c, .. } => (r(d), r(a), s(sh), r(b), if c != NO_REG { r(c) }).4,
            Inst::UnpackFSDot { d, a, s: sh, m, c, x, acc, .. } => (r(d), r(a), s(sh), r(m), r(c), r(x), if acc != NO_REG { r(acc) }).6,
            Inst::SExtDot { d, a, x, acc, .. } => (r(d), r(a), r(x), if acc != NO_REG { r(acc) }).3,
            Inst::UnpackFSDot4 { d, a, s: sh, m, c, acc, xaddr, xbound, .. } => {
                (r(d), r(a), s(sh), r(m), r(c), if acc != NO_REG { r(acc) }, s(xaddr), if xbound != NO_REG { s(xbound) }).7
            }
            Inst::SExtDot4 { d, a, acc, xaddr, xbound, .. } => (r(d), r(a), if acc != NO_REG { r(acc) }, s(xaddr), if xbound != NO_REG { s(xbound) }).4,
            Inst::UnpackFVarMul { d, a, s: b, m: c, .. } => (r(d), r(a), r(b), r(c)).3,
            Inst::UnpackFVar { d, a, s: b, .. } | Inst::Bin { d, a, b, .. } => (r(d), r(a), r(b)).2,
            Inst::Fma { d, a, b, c } | Inst::MulAdd { d, a, b, c } | Inst::Select { d, c: a, t: b, f: c } => (r(d), r(a), r(b), r(c)).3,
            Inst::AddMasked { d, a, b, c } => (r(d), r(a), r(b), if c != NO_REG { r(c) }).3,
            Inst::ExtractBits { d, e, off, cnt, .. } => (r(d), r(e), r(off), r(cnt)).3,
            Inst::InsertBits { d, e, n, off, cnt } => (r(d), r(e), r(n), r(off), r(cnt)).4,
            Inst::Gather { d, table, len, idx, .. } => (r(d), r(idx), t(table, len)).2,
            Inst::ScatterMasked { table, len, idx, s: v, .. } => (r(v), r(idx), t(table, len)).2,
            Inst::SMovi { d, .. } => s(d),
            Inst::SBin { d, a, b, .. } => (s(d), s(a), s(b)).2,
            Inst::SBinImm { d, a, .. } | Inst::SUn { d, a, .. } | Inst::SLdUniform { d, addr: a, .. } => (s(d), s(a)).1,
            Inst::SSelect { d, c, t: a, f: b } => (s(d), s(c), s(a), s(b)).3,
            Inst::SMovIfAny { d, s: a } => (s(d), s(a)).1,
            Inst::Broadcast { d, s: a } => (r(d), s(a)).1,
            Inst::BinVS { d, a, s: b, .. } => (r(d), r(a), s(b)).2,
            Inst::LdStorage { d, addr, .. } | Inst::LdUniform { d, addr, .. } | Inst::LdShared { d, addr, .. } => (r(d), r(addr)).1,
            Inst::LdStorageBelow { d, addr, bound, .. } => (r(d), r(addr), s(bound)).2,
            Inst::LdStorageN { table, n, addr, .. } => (r(addr), t(table, n), distinct(table, n)).2,
            Inst::LdStorageBelowN { table, n, addr, bound, .. } => (r(addr), s(bound), t(table, n), distinct(table, n)).3,
            Inst::LdStorageBelowNS { table, n, addr, bound, .. } => (s(addr), if bound != NO_REG { s(bound) }, t(table, n), distinct(table, n)).3,
            Inst::StStorage { s: v, addr, .. } | Inst::StShared { s: v, addr, .. } => (r(v), r(addr)).1,
            Inst::Atomic { d, addr, v, cmp, .. } => (r(d), r(addr), r(v), r(cmp)).3,
            Inst::ArrayLength { d, .. } => r(d),
            Inst::CoopLoad { d, addr, stride, .. } => (r(addr), r(stride), t(d, COOP_REGS), distinct(d, COOP_REGS)).3,
            Inst::CoopStore { s: v, addr, stride, .. } => (r(addr), r(stride), t(v, COOP_REGS)).2,
            Inst::CoopMulAdd { d, a, b, c: cc, .. } => (t(d, COOP_REGS), distinct(d, COOP_REGS), t(a, COOP_REGS), t(b, COOP_REGS), t(cc, COOP_REGS)).4,
            Inst::SaveExec { m: x } | Inst::ClearMask { m: x } | Inst::Leave { m: x } | Inst::Rejoin { m: x } | Inst::ExecFrom { m: x } => m(x),
            Inst::AndCond { c } => r(c),
            Inst::ElseOf { m: x, c } | Inst::BreakIf { m: x, c } | Inst::BreakUnless { m: x, c } => (m(x), r(c)).1,
            Inst::Join { saved, a, b, c } => {
                m(saved);
                [a, b, c].into_iter().filter(|&x| x != NO_MASK).for_each(m);
            }
            Inst::JumpIfZeroS { c, to: x } | Inst::JumpIfNonZeroS { c, to: x } => (s(c), to(x)).1,
            Inst::JumpIfNone { to: x } | Inst::JumpIfAny { to: x } | Inst::Jump { to: x } => to(x),
            Inst::Barrier | Inst::Halt => {}
        }
    }
}

impl<'p> Worker<'p> {
    fn new(prog: &'p EntryProgram, cache_model: bool) -> Self {
        let threads = prog.workgroup_size.iter().product::<u32>() as usize;
        let n_warps = threads.div_ceil(W).max(1);
        let warps = (0..n_warps)
            .map(|_| Warp {
                pc: 0,
                exec: 0,
                masks: vec![0; prog.n_masks as usize],
                regs: vec![[0; W]; prog.n_regs as usize],
                sregs: vec![0; prog.n_sregs.max(1) as usize],
                done: false,
            })
            .collect();
        Self {
            prog,
            warps,
            shared: vec![0; prog.shared_words as usize],
            counters: Counters::default(),
            cache: cache_model.then(Cache::new),
            avx2: host_has_avx2(),
        }
    }

    /// Runs workgroup `wg` to completion.
    fn workgroup(&mut self, mem: &Bindings, wg: [u32; 3], num_wg: [u32; 3]) {
        let size = self.prog.workgroup_size;
        let threads = (size[0] * size[1] * size[2]) as usize;
        self.shared.fill(0);
        let uniform_builtin = |b: Builtin| match b {
            Builtin::WorkgroupId(i) => wg[i as usize],
            Builtin::NumWorkgroups(i) => num_wg[i as usize],
            Builtin::WorkgroupSize(i) => size[i as usize],
            _ => unreachable!("per-lane built-in {b:?} in a scalar register"),
        };
        for (w, warp) in self.warps.iter_mut().enumerate() {
            warp.pc = 0;
            warp.done = false;
            let live = threads.saturating_sub(w * W).min(W);
            warp.exec = if live == W { ALL_LANES } else { (1u64 << live) - 1 };
            warp.masks.fill(0);
            for &(b, r) in &self.prog.scalar_builtins {
                warp.sregs[r as usize] = uniform_builtin(b);
            }
            for &(b, r) in &self.prog.builtins {
                let d = &mut warp.regs[r as usize];
                for (l, slot) in d.iter_mut().enumerate() {
                    let idx = (w * W + l) as u32;
                    let local = [idx % size[0], idx / size[0] % size[1], idx / (size[0] * size[1])];
                    *slot = match b {
                        Builtin::LocalIndex => idx,
                        Builtin::LocalId(i) => local[i as usize],
                        Builtin::GlobalId(i) => wg[i as usize] * size[i as usize] + local[i as usize],
                        other => uniform_builtin(other),
                    };
                }
            }
        }
        self.counters.workgroups += 1;
        loop {
            let mut running = false;
            for w in 0..self.warps.len() {
                if self.warps[w].done {
                    continue;
                }
                match self.run_warp(w, mem) {
                    Stop::Halt => self.warps[w].done = true,
                    Stop::Barrier => running = true,
                }
            }
            if !running {
                break;
            }
            self.counters.barriers += 1;
        }
    }

    fn run_warp(&mut self, w: usize, mem: &Bindings) -> Stop {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 (`host_has_avx2`).
            return unsafe { self.run_warp_avx2(w, mem) };
        }
        self.run_warp_body(w, mem)
    }

    /// The same loop compiled with AVX2 enabled: the arithmetic is IEEE f32 and integer ops
    /// either way (no fast-math, no FMA contraction), so the results are bit-identical.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    unsafe fn run_warp_avx2(&mut self, w: usize, mem: &Bindings) -> Stop {
        self.run_warp_body(w, mem)
    }

    #[inline(always)]
    fn run_warp_body(&mut self, w: usize, mem: &Bindings) -> Stop {
        let prog = self.prog;
        let warp = &mut self.warps[w];
        let shared = &mut self.shared;
        let c = &mut self.counters;
        let regs = &mut warp.regs[..];
        let sregs = &mut warp.sregs[..];
        let masks = &mut warp.masks[..];
        let mut exec = warp.exec;
        let mut pc = warp.pc;
        let insts = &prog.insts[..];
        // Counted locally, added to the counters once per run.
        let (mut executed, mut active) = (0u64, 0u64);
        let stop = loop {
            // SAFETY: `check_program` verified every jump target, and the program ends in Halt,
            // so pc stays inside the program.
            let inst = unsafe { *insts.get_unchecked(pc) };
            pc += 1;
            executed += 1;
            active += exec.count_ones() as u64;
            // Register, scalar and mask indices below were range-checked by `check_program`.
            let u = |x: u32| x as usize;
            match inst {
                Inst::Movi { d, imm } => regs[u(d)] = [imm; W],
                Inst::Mov { d, s } => regs[u(d)] = regs[u(s)],
                Inst::MovMasked { d, s } => op1!(regs, u(d), u(s), |o, v| masked_copy(o, v, exec)),
                Inst::AddMasked { d, a, b, c: cc } => {
                    let (d, a, b) = (u(d), u(a), u(b));
                    let base = regs.as_mut_ptr();
                    // SAFETY: `check_program` verified every index. `a` is usually `d` (the
                    // variable added to): then it is read through the destination itself; other
                    // sources that alias the destination are copied first.
                    unsafe {
                        let (tb, tc): (Lanes, Lanes);
                        let bv: &Lanes = if b == d {
                            tb = *base.add(b);
                            &tb
                        } else {
                            &*base.add(b)
                        };
                        let cv: Option<&Lanes> = match cc {
                            NO_REG => None,
                            x if u(x) == d => {
                                tc = *base.add(d);
                                Some(&tc)
                            }
                            x => Some(&*base.add(u(x))),
                        };
                        let av: Option<&Lanes> = if a == d { None } else { Some(&*base.add(a)) };
                        add_masked(&mut *base.add(d), av, bv, cv, exec);
                    }
                }
                Inst::Bin { op, d, a, b } => op2!(regs, u(d), u(a), u(b), |o, x, y| bin(op, o, x, y)),
                Inst::BinImm { op, d, a, imm } => {
                    // Hardware division costs ~25 cycles a lane: powers of two become shifts.
                    let (op, imm) = match op {
                        BinOp::UDiv if imm.is_power_of_two() => (BinOp::ShrU, imm.trailing_zeros()),
                        BinOp::URem if imm.is_power_of_two() => (BinOp::And, imm - 1),
                        _ => (op, imm),
                    };
                    op1!(regs, u(d), u(a), |o, x| bin(op, o, x, imm))
                }
                Inst::BinVS { op, d, a, s } => {
                    let y = sregs[u(s)];
                    op1!(regs, u(d), u(a), |o, x| bin(op, o, x, y))
                }
                Inst::Broadcast { d, s } => regs[u(d)] = [sregs[u(s)]; W],
                Inst::Un { op, d, a } => op1!(regs, u(d), u(a), |o, x| un(op, o, x)),
                Inst::Fma { d, a, b, c: cc } => op3!(regs, u(d), u(a), u(b), u(cc), |o, a, b, cc| {
                    for l in 0..W {
                        o[l] = f(a[l]).mul_add(f(b[l]), f(cc[l])).to_bits();
                    }
                }),
                Inst::MulAdd { d, a, b, c: cc } => op3!(regs, u(d), u(a), u(b), u(cc), |o, a, b, cc| {
                    for l in 0..W {
                        o[l] = (f(a[l]) * f(b[l]) + f(cc[l])).to_bits();
                    }
                }),
                Inst::Select { d, c: cond, t, f: fv } => op3!(regs, u(d), u(cond), u(t), u(fv), |o, cond, t, fv| {
                    // Bitwise, so it vectorises (a branch per lane does not).
                    for l in 0..W {
                        let m = ((cond[l] != 0) as u32).wrapping_neg();
                        o[l] = (t[l] & m) | (fv[l] & !m);
                    }
                }),
                Inst::ShrAnd { d, a, shift, mask } => op1!(regs, u(d), u(a), |o, a| {
                    for l in 0..W {
                        o[l] = a[l].wrapping_shr(shift) & mask;
                    }
                }),
                Inst::SExtF { d, a, shl, shr } => op1!(regs, u(d), u(a), |o, a| {
                    for l in 0..W {
                        o[l] = (((a[l] << shl) as i32 >> shr) as f32).to_bits();
                    }
                }),
                Inst::UnpackF { d, a, shift, mask, sub } => by_mask!(mask, cvt => op1!(regs, u(d), u(a), |o, a| {
                    let sub = f(sub);
                    for l in 0..W {
                        o[l] = (cvt(a[l].wrapping_shr(shift) & mask) - sub).to_bits();
                    }
                })),
                Inst::SExtDot { d, a, shl, shr, x, acc } => {
                    let sext = |v: u32| ((v << shl) as i32 >> shr) as f32;
                    if acc == NO_REG {
                        op2!(regs, u(d), u(a), u(x), |o, a, x| {
                            for l in 0..W {
                                o[l] = (sext(a[l]) * f(x[l])).to_bits();
                            }
                        })
                    } else {
                        op3!(regs, u(d), u(a), u(x), u(acc), |o, a, x, acc| {
                            for l in 0..W {
                                o[l] = (sext(a[l]) * f(x[l]) + f(acc[l])).to_bits();
                            }
                        })
                    }
                }
                Inst::UnpackFSDot { d, a, s, shift, mask1, mask, m, c: cc, x, acc } => {
                    let sh = sregs[u(s)] & 31;
                    let base = regs.as_mut_ptr();
                    // SAFETY: `check_program` verified every index; sources aliasing the
                    // destination are copied first (the lanes are read before any is written).
                    unsafe {
                        let (d, a, m, cc, x) = (u(d), u(a), u(m), u(cc), u(x));
                        let acc = if acc == NO_REG { None } else { Some(u(acc)) };
                        let alias = [a, m, cc, x].contains(&d) || acc == Some(d);
                        let copy = |r: usize| -> Lanes { *base.add(r) };
                        let (ta, tm, tc, tx, tacc): (Lanes, Lanes, Lanes, Lanes, Lanes);
                        let (a, m, cc, x, accv): (&Lanes, &Lanes, &Lanes, &Lanes, Option<&Lanes>) = if alias {
                            (ta, tm, tc, tx) = (copy(a), copy(m), copy(cc), copy(x));
                            tacc = acc.map_or([0; W], copy);
                            (&ta, &tm, &tc, &tx, acc.map(|_| &tacc))
                        } else {
                            (&*base.add(a), &*base.add(m), &*base.add(cc), &*base.add(x), acc.map(|r| &*base.add(r)))
                        };
                        let o: &mut Lanes = &mut *base.add(d);
                        by_mask!(mask, cvt => {
                            let w = |l: usize| (cvt(((a[l].wrapping_shr(shift) & mask1) >> sh) & mask) * f(m[l])) + f(cc[l]);
                            match accv {
                                Some(acc) => {
                                    for l in 0..W {
                                        o[l] = (w(l) * f(x[l]) + f(acc[l])).to_bits();
                                    }
                                }
                                None => {
                                    for l in 0..W {
                                        o[l] = (w(l) * f(x[l])).to_bits();
                                    }
                                }
                            }
                        })
                    }
                }
                Inst::UnpackFSDot4 { d, a, s, shifts, mask1, mask, m, c: cc, acc, xbinding, xaddr, xoff, xbound } => {
                    let x = uniform_words4(&mem.storage[xbinding as usize], sregs[u(xaddr)].wrapping_add(xoff), if xbound == NO_REG { usize::MAX } else { sregs[u(xbound)] as usize });
                    if let Some(cache) = self.cache.as_mut() {
                        touch_words(cache, c, xbinding, sregs[u(xaddr)].wrapping_add(xoff), 4);
                    }
                    c.words_loaded += 4;
                    // `((a >> s1) & mask1) >> s2 & mask` = `(a >> (s1 + s2)) & ((mask1 >> s2) & mask)`
                    // (0 when s1 + s2 >= 32: every bit shifted out): one shift and one mask a step.
                    let sh = sregs[u(s)] & 31;
                    let (mut st, mut sm) = ([0u32; 4], [0u32; 4]);
                    for t in 0..4 {
                        let total = (shifts >> (8 * t) & 31) + sh;
                        (st[t], sm[t]) = if total < 32 { (total, (mask1 >> sh) & mask) } else { (0, 0) };
                    }
                    let base = regs.as_mut_ptr();
                    // SAFETY: `check_program` verified every index; sources aliasing the
                    // destination are copied first (the lanes are read before any is written).
                    unsafe {
                        let (d, a, m, cc) = (u(d), u(a), u(m), u(cc));
                        let acc = if acc == NO_REG { None } else { Some(u(acc)) };
                        let alias = [a, m, cc].contains(&d) || acc == Some(d);
                        let copy = |r: usize| -> Lanes { *base.add(r) };
                        let (ta, tm, tc, tacc): (Lanes, Lanes, Lanes, Lanes);
                        let (a, m, cc, accv): (&Lanes, &Lanes, &Lanes, Option<&Lanes>) = if alias {
                            (ta, tm, tc) = (copy(a), copy(m), copy(cc));
                            tacc = acc.map_or([0; W], copy);
                            (&ta, &tm, &tc, acc.map(|_| &tacc))
                        } else {
                            (&*base.add(a), &*base.add(m), &*base.add(cc), acc.map(|r| &*base.add(r)))
                        };
                        let o: &mut Lanes = &mut *base.add(d);
                        by_mask!(mask, cvt => {
                            // Each step as `UnpackFSDot`: w = q * m + c, then w * x + acc.
                            let w = |l: usize, t: usize| (cvt((a[l] >> st[t]) & sm[t]) * f(m[l])) + f(cc[l]);
                            match accv {
                                Some(acc) => {
                                    for l in 0..W {
                                        let r = w(l, 0) * x[0] + f(acc[l]);
                                        let r = w(l, 1) * x[1] + r;
                                        let r = w(l, 2) * x[2] + r;
                                        o[l] = (w(l, 3) * x[3] + r).to_bits();
                                    }
                                }
                                None => {
                                    for l in 0..W {
                                        let r = w(l, 0) * x[0];
                                        let r = w(l, 1) * x[1] + r;
                                        let r = w(l, 2) * x[2] + r;
                                        o[l] = (w(l, 3) * x[3] + r).to_bits();
                                    }
                                }
                            }
                        })
                    }
                }
                Inst::SExtDot4 { d, a, shls, shr, acc, xbinding, xaddr, xoff, xbound } => {
                    let x = uniform_words4(&mem.storage[xbinding as usize], sregs[u(xaddr)].wrapping_add(xoff), if xbound == NO_REG { usize::MAX } else { sregs[u(xbound)] as usize });
                    if let Some(cache) = self.cache.as_mut() {
                        touch_words(cache, c, xbinding, sregs[u(xaddr)].wrapping_add(xoff), 4);
                    }
                    c.words_loaded += 4;
                    let st = [shls & 31, shls >> 8 & 31, shls >> 16 & 31, shls >> 24 & 31];
                    // Each step as `SExtDot`: f32(i32(a << shl) >> shr) * x + acc.
                    let sext = |v: u32, t: usize| ((v << st[t]) as i32 >> shr) as f32;
                    if acc == NO_REG {
                        op1!(regs, u(d), u(a), |o, a| {
                            for l in 0..W {
                                let r = sext(a[l], 0) * x[0];
                                let r = sext(a[l], 1) * x[1] + r;
                                let r = sext(a[l], 2) * x[2] + r;
                                o[l] = (sext(a[l], 3) * x[3] + r).to_bits();
                            }
                        })
                    } else {
                        op2!(regs, u(d), u(a), u(acc), |o, a, acc| {
                            for l in 0..W {
                                let r = sext(a[l], 0) * x[0] + f(acc[l]);
                                let r = sext(a[l], 1) * x[1] + r;
                                let r = sext(a[l], 2) * x[2] + r;
                                o[l] = (sext(a[l], 3) * x[3] + r).to_bits();
                            }
                        })
                    }
                }
                Inst::UnpackFSMulAdd { d, a, s, shift, mask1, mask, sub, m, c: cc } => by_mask!(mask, cvt => {
                    let sub = f(sub);
                    let sh = sregs[u(s)] & 31;
                    if cc == NO_REG {
                        op2!(regs, u(d), u(a), u(m), |o, a, m| {
                            for l in 0..W {
                                let q = ((a[l].wrapping_shr(shift) & mask1) >> sh) & mask;
                                o[l] = ((cvt(q) - sub) * f(m[l])).to_bits();
                            }
                        })
                    } else {
                        op3!(regs, u(d), u(a), u(m), u(cc), |o, a, m, cc| {
                            for l in 0..W {
                                let q = ((a[l].wrapping_shr(shift) & mask1) >> sh) & mask;
                                o[l] = ((cvt(q) - sub) * f(m[l]) + f(cc[l])).to_bits();
                            }
                        })
                    }
                }),
                Inst::UnpackFMul { d, a, shift, mask, sub, m } => by_mask!(mask, cvt => op2!(regs, u(d), u(a), u(m), |o, a, m| {
                    let sub = f(sub);
                    for l in 0..W {
                        o[l] = ((cvt(a[l].wrapping_shr(shift) & mask) - sub) * f(m[l])).to_bits();
                    }
                })),
                Inst::UnpackFVarMul { d, a, s, mask, sub, m } => op3!(regs, u(d), u(a), u(s), u(m), |o, a, s, m| {
                    let sub = f(sub);
                    for l in 0..W {
                        o[l] = (((a[l].wrapping_shr(s[l]) & mask) as f32 - sub) * f(m[l])).to_bits();
                    }
                }),
                Inst::UnpackFVar { d, a, s, mask, sub } => op2!(regs, u(d), u(a), u(s), |o, a, s| {
                    let sub = f(sub);
                    for l in 0..W {
                        o[l] = ((a[l].wrapping_shr(s[l]) & mask) as f32 - sub).to_bits();
                    }
                }),
                Inst::ExtractBits { signed, d, e, off, cnt } => op3!(regs, u(d), u(e), u(off), u(cnt), |o, e, off, cnt| {
                    for l in 0..W {
                        o[l] = extract_bits(e[l], off[l], cnt[l], signed);
                    }
                }),
                Inst::InsertBits { d, e, n, off, cnt } => {
                    let (e, n, off, cnt) = (regs[u(e)], regs[u(n)], regs[u(off)], regs[u(cnt)]);
                    let o = &mut regs[u(d)];
                    for l in 0..W {
                        o[l] = insert_bits(e[l], n[l], off[l], cnt[l]);
                    }
                }
                Inst::Gather { d, table, len, idx, off } => {
                    let idx = regs[u(idx)];
                    let table = &prog.tables[table as usize..][..len as usize];
                    let mut out = [0u32; W];
                    for l in 0..W {
                        let i = (idx[l].wrapping_add(off) as usize).min(len as usize - 1);
                        out[l] = regs[table[i] as usize][l];
                    }
                    regs[u(d)] = out;
                }
                Inst::ScatterMasked { table, len, idx, off, s } => {
                    let (idx, s) = (regs[u(idx)], regs[u(s)]);
                    let table = &prog.tables[table as usize..][..len as usize];
                    for l in 0..W {
                        if exec >> l & 1 == 1 {
                            let i = (idx[l].wrapping_add(off) as usize).min(len as usize - 1);
                            regs[table[i] as usize][l] = s[l];
                        }
                    }
                }
                Inst::SMovi { d, imm } => sregs[u(d)] = imm,
                Inst::SBin { op, d, a, b } => sregs[u(d)] = bin1(op, sregs[u(a)], sregs[u(b)]),
                Inst::SBinImm { op, d, a, imm } => {
                    let x = sregs[u(a)];
                    sregs[u(d)] = match op {
                        BinOp::UDiv if imm.is_power_of_two() => x >> imm.trailing_zeros(),
                        BinOp::URem if imm.is_power_of_two() => x & (imm - 1),
                        _ => bin1(op, x, imm),
                    };
                }
                Inst::SUn { op, d, a } => {
                    let mut o = [0u32; 1];
                    un(op, &mut o, &[sregs[u(a)]]);
                    sregs[u(d)] = o[0];
                }
                Inst::SSelect { d, c: cond, t, f: fv } => sregs[u(d)] = if sregs[u(cond)] != 0 { sregs[u(t)] } else { sregs[u(fv)] },
                Inst::SMovIfAny { d, s } => {
                    if exec != 0 {
                        sregs[u(d)] = sregs[u(s)];
                    }
                }
                Inst::SLdUniform { d, addr, off } => {
                    sregs[u(d)] = mem.uniform.get(sregs[u(addr)].wrapping_add(off) as usize).copied().unwrap_or(0)
                }
                Inst::LdStorage { d, binding, addr, off } => {
                    let view = mem.storage[binding as usize];
                    op1!(regs, u(d), u(addr), |o, a| {
                        load_storage(&view, o, a, off, exec);
                        if let Some(cache) = self.cache.as_mut() {
                            touch_lines(cache, c, binding, a, off, exec);
                        }
                    });
                    c.words_loaded += exec.count_ones() as u64;
                }
                Inst::LdStorageBelow { d, binding, addr, off, bound } => {
                    let view = mem.storage[binding as usize];
                    let limit = view.len.min(sregs[u(bound)] as usize);
                    op1!(regs, u(d), u(addr), |o, a| {
                        load_below(&view, o, a, off, limit);
                        if let Some(cache) = self.cache.as_mut() {
                            touch_lines(cache, c, binding, a, off, exec);
                        }
                    });
                    c.words_loaded += exec.count_ones() as u64;
                }
                Inst::LdStorageN { table, n, binding, addr, off } => {
                    let view = mem.storage[binding as usize];
                    let a = regs[u(addr)];
                    let dst = &prog.tables[table as usize..][..n as usize];
                    load_words(&view, regs, dst, &a, off, view.len, exec, false);
                    if let Some(cache) = self.cache.as_mut() {
                        for j in 0..n {
                            touch_lines(cache, c, binding, &a, off.wrapping_add(j), exec);
                        }
                    }
                    c.words_loaded += exec.count_ones() as u64 * n as u64;
                }
                Inst::LdStorageBelowN { table, n, binding, addr, off, bound } => {
                    let view = mem.storage[binding as usize];
                    let limit = view.len.min(sregs[u(bound)] as usize);
                    let a = regs[u(addr)];
                    let dst = &prog.tables[table as usize..][..n as usize];
                    load_words(&view, regs, dst, &a, off, limit, exec, true);
                    if let Some(cache) = self.cache.as_mut() {
                        for j in 0..n {
                            touch_lines(cache, c, binding, &a, off.wrapping_add(j), exec);
                        }
                    }
                    c.words_loaded += exec.count_ones() as u64 * n as u64;
                }
                Inst::LdStorageBelowNS { table, n, binding, addr, off, bound } => {
                    let view = mem.storage[binding as usize];
                    let limit = if bound == NO_REG { view.len } else { view.len.min(sregs[u(bound)] as usize) };
                    let start = sregs[u(addr)].wrapping_add(off);
                    let dst = &prog.tables[table as usize..][..n as usize];
                    for (j, &d) in dst.iter().enumerate() {
                        let i = start.wrapping_add(j as u32) as usize;
                        // SAFETY: read only below `limit` <= the buffer's length.
                        let v = if i < limit { unsafe { *view.ptr.add(i) } } else { 0 };
                        regs[u(d)] = [v; W];
                        if let Some(cache) = self.cache.as_mut() {
                            if cache.access(binding, i as u32) {
                                c.cache_hits += 1;
                            } else {
                                c.cache_misses += 1;
                            }
                        }
                    }
                    c.words_loaded += n as u64;
                }
                Inst::StStorage { s, binding, addr, off } => {
                    let view = mem.storage[binding as usize];
                    let (a, v) = (&regs[u(addr)], &regs[u(s)]);
                    if exec == ALL_LANES {
                        for l in 0..W {
                            view.set(a[l].wrapping_add(off), v[l]);
                        }
                    } else {
                        for l in 0..W {
                            if exec >> l & 1 == 1 {
                                view.set(a[l].wrapping_add(off), v[l]);
                            }
                        }
                    }
                    c.words_stored += exec.count_ones() as u64;
                    if let Some(cache) = self.cache.as_mut() {
                        touch_lines(cache, c, binding, a, off, exec);
                    }
                }
                Inst::LdUniform { d, addr, off } => {
                    let get = |i: u32| mem.uniform.get(i as usize).copied().unwrap_or(0);
                    if addr == qwglm_sim_lower::isa::ZERO {
                        regs[u(d)] = [get(off); W];
                    } else {
                        op1!(regs, u(d), u(addr), |o, a| {
                            for l in 0..W {
                                o[l] = get(a[l].wrapping_add(off));
                            }
                        });
                    }
                }
                Inst::LdShared { d, addr, off } => op1!(regs, u(d), u(addr), |o, a| {
                    for l in 0..W {
                        if exec >> l & 1 == 1 {
                            o[l] = shared.get(a[l].wrapping_add(off) as usize).copied().unwrap_or(0);
                        }
                    }
                }),
                Inst::StShared { s, addr, off } => {
                    let (a, v) = (&regs[u(addr)], &regs[u(s)]);
                    for l in 0..W {
                        if exec >> l & 1 == 1 {
                            if let Some(slot) = shared.get_mut(a[l].wrapping_add(off) as usize) {
                                *slot = v[l];
                            }
                        }
                    }
                }
                Inst::Atomic { op, space, d, addr, off, v, cmp } => {
                    let (a, v, cmpv) = (regs[u(addr)], regs[u(v)], regs[u(cmp)]);
                    let out = &mut regs[u(d)];
                    for l in 0..W {
                        if exec >> l & 1 == 0 {
                            continue;
                        }
                        let i = a[l].wrapping_add(off);
                        out[l] = match space {
                            AtomicSpace::Storage(b) => match mem.storage[b as usize].atomic(i) {
                                Some(cell) => atomic_rmw(cell, op, v[l], cmpv[l]),
                                None => 0,
                            },
                            AtomicSpace::Workgroup => match shared.get_mut(i as usize) {
                                // SAFETY: a valid, exclusively borrowed u32.
                                Some(slot) => atomic_rmw(unsafe { AtomicU32::from_ptr(slot) }, op, v[l], cmpv[l]),
                                None => 0,
                            },
                        };
                    }
                }
                Inst::ArrayLength { d, binding, offset_words, stride_words } => {
                    let len = mem.storage[binding as usize].len as u32;
                    regs[u(d)] = [len.saturating_sub(offset_words) / stride_words.max(1); W];
                }
                Inst::CoopLoad { d, space, addr, off, stride, row_major } => {
                    let dst = &prog.tables[d as usize..][..COOP_REGS as usize];
                    c.words_loaded += coop_load(regs, dst, exec, mem, shared, space, u(addr), off, u(stride), row_major);
                }
                Inst::CoopStore { s, space, addr, off, stride, row_major } => {
                    let src = &prog.tables[s as usize..][..COOP_REGS as usize];
                    c.words_stored += coop_store(regs, src, exec, mem, shared, space, u(addr), off, u(stride), row_major);
                }
                Inst::CoopMulAdd { d, a, b, c: cc, f16 } => {
                    let t = |x: u32| &prog.tables[x as usize..][..COOP_REGS as usize];
                    coop_mul_add(regs, exec, t(d), t(a), t(b), t(cc), f16);
                }
                Inst::SaveExec { m } => masks[m as usize] = exec,
                Inst::AndCond { c: cond } => exec &= nonzero(&regs[u(cond)]),
                Inst::ElseOf { m, c: cond } => exec = masks[m as usize] & !nonzero(&regs[u(cond)]),
                Inst::Join { saved, a, b, c: cc } => {
                    let mut gone = 0;
                    for s in [a, b, cc] {
                        if s != qwglm_sim_lower::isa::NO_MASK {
                            gone |= masks[s as usize];
                        }
                    }
                    exec = masks[saved as usize] & !gone;
                }
                Inst::ClearMask { m } => masks[m as usize] = 0,
                Inst::Leave { m } => {
                    masks[m as usize] |= exec;
                    exec = 0;
                }
                Inst::Rejoin { m } => {
                    exec |= masks[m as usize];
                    masks[m as usize] = 0;
                }
                Inst::ExecFrom { m } => exec = masks[m as usize],
                Inst::BreakIf { m, c: cond } => {
                    let leaving = exec & nonzero(&regs[u(cond)]);
                    masks[m as usize] |= leaving;
                    exec &= !leaving;
                }
                Inst::BreakUnless { m, c: cond } => {
                    let leaving = exec & !nonzero(&regs[u(cond)]);
                    masks[m as usize] |= leaving;
                    exec &= !leaving;
                }
                Inst::JumpIfZeroS { c: cond, to } => {
                    if sregs[u(cond)] == 0 {
                        pc = to as usize;
                    }
                }
                Inst::JumpIfNonZeroS { c: cond, to } => {
                    if sregs[u(cond)] != 0 {
                        pc = to as usize;
                    }
                }
                Inst::JumpIfNone { to } => {
                    if exec == 0 {
                        pc = to as usize;
                    }
                }
                Inst::JumpIfAny { to } => {
                    if exec != 0 {
                        pc = to as usize;
                    }
                }
                Inst::Jump { to } => pc = to as usize,
                Inst::Barrier => break Stop::Barrier,
                Inst::Halt => break Stop::Halt,
            }
        };
        c.warp_instructions += executed;
        c.active_lanes += active;
        warp.pc = pc;
        warp.exec = exec;
        stop
    }
}

/// Elements of one cooperative matrix.
const COOP_ELEMS: usize = COOP_DIM * COOP_DIM;

/// The subgroups of the warp with an active lane: (first lane of the subgroup, its first active
/// lane).
fn active_subgroups(exec: u64) -> impl Iterator<Item = (usize, usize)> {
    (0..W / SUBGROUP).filter_map(move |h| {
        let lanes = (exec >> (h * SUBGROUP)) & (u64::MAX >> (64 - SUBGROUP));
        (lanes != 0).then(|| (h * SUBGROUP, h * SUBGROUP + lanes.trailing_zeros() as usize))
    })
}

/// Word address of element `e` (row-major index) of a matrix at `base` with `stride`.
#[inline(always)]
fn coop_addr(base: u32, stride: u32, e: usize, row_major: bool) -> u32 {
    let (i, j) = ((e / COOP_DIM) as u32, (e % COOP_DIM) as u32);
    let (major, minor) = if row_major { (i, j) } else { (j, i) };
    base.wrapping_add(major.wrapping_mul(stride)).wrapping_add(minor)
}

/// `CoopLoad`: each active subgroup's matrix from memory into the registers `dst`; returns the
/// storage words read.
#[allow(clippy::too_many_arguments)]
fn coop_load(regs: &mut [Lanes], dst: &[u32], exec: u64, mem: &Bindings, shared: &[u32], space: CoopSpace, addr: usize, off: u32, stride: usize, row_major: bool) -> u64 {
    let mut words = 0;
    for (lane0, first) in active_subgroups(exec) {
        let base = regs[addr][first].wrapping_add(off);
        let st = regs[stride][first];
        for e in 0..COOP_ELEMS {
            let i = coop_addr(base, st, e, row_major);
            let v = match space {
                CoopSpace::Workgroup => shared.get(i as usize).copied().unwrap_or(0),
                CoopSpace::Storage(b) => {
                    words += 1;
                    mem.storage[b as usize].get(i)
                }
            };
            regs[dst[e / SUBGROUP] as usize][lane0 + e % SUBGROUP] = v;
        }
    }
    words
}

/// `CoopStore`: each active subgroup's matrix in the registers `src` to memory; returns the
/// storage words written.
#[allow(clippy::too_many_arguments)]
fn coop_store(regs: &[Lanes], src: &[u32], exec: u64, mem: &Bindings, shared: &mut [u32], space: CoopSpace, addr: usize, off: u32, stride: usize, row_major: bool) -> u64 {
    let mut words = 0;
    for (lane0, first) in active_subgroups(exec) {
        let base = regs[addr][first].wrapping_add(off);
        let st = regs[stride][first];
        for e in 0..COOP_ELEMS {
            let i = coop_addr(base, st, e, row_major);
            let v = regs[src[e / SUBGROUP] as usize][lane0 + e % SUBGROUP];
            match space {
                CoopSpace::Workgroup => {
                    if let Some(slot) = shared.get_mut(i as usize) {
                        *slot = v;
                    }
                }
                CoopSpace::Storage(b) => {
                    words += 1;
                    mem.storage[b as usize].set(i, v);
                }
            }
        }
    }
    words
}

/// `CoopMulAdd`: `d = a * b + c` for each active subgroup, in the order `isa` documents.
fn coop_mul_add(regs: &mut [Lanes], exec: u64, d: &[u32], a: &[u32], b: &[u32], c: &[u32], f16: bool) {
    let gather = |regs: &[Lanes], t: &[u32], lane0: usize| -> [f32; COOP_ELEMS] {
        std::array::from_fn(|e| f(regs[t[e / SUBGROUP] as usize][lane0 + e % SUBGROUP]))
    };
    for (lane0, _) in active_subgroups(exec) {
        let (ma, mb) = (gather(regs, a, lane0), gather(regs, b, lane0));
        let mut acc = gather(regs, c, lane0);
        // k outermost per row, so the inner loop runs over the 16 columns (vectorised) while each
        // element still sums k = 0, 1, ..., 15 in order.
        for i in 0..COOP_DIM {
            let row = &mut acc[i * COOP_DIM..][..COOP_DIM];
            for k in 0..COOP_DIM {
                let x = ma[i * COOP_DIM + k];
                let bk = &mb[k * COOP_DIM..][..COOP_DIM];
                for j in 0..COOP_DIM {
                    row[j] += x * bk[j];
                }
            }
        }
        for (e, &v) in acc.iter().enumerate() {
            let v = if f16 { half::f16::from_f32(v).to_f32() } else { v };
            regs[d[e / SUBGROUP] as usize][lane0 + e % SUBGROUP] = v.to_bits();
        }
    }
}

/// A storage load into the lanes of `exec` (out-of-bounds lanes read 0). A full warp reading
/// consecutive words in bounds is one copy.
#[inline(always)]
fn load_storage(view: &View, o: &mut Lanes, a: &Lanes, off: u32, exec: u64) {
    if exec == ALL_LANES {
        if contiguous(a) {
            let start = a[0].wrapping_add(off) as usize;
            if start.checked_add(W).is_some_and(|end| end <= view.len) {
                // SAFETY: start..start+W is inside the buffer.
                let src = unsafe { std::slice::from_raw_parts(view.ptr.add(start), W) };
                o.copy_from_slice(src);
                return;
            }
        }
        // One range check for the warp, then a gather without a branch per lane.
        let mut hi = 0u32;
        for l in 0..W {
            hi = hi.max(a[l].wrapping_add(off));
        }
        if (hi as usize) < view.len {
            for l in 0..W {
                // SAFETY: every index is at most `hi`, inside the buffer.
                o[l] = unsafe { *view.ptr.add(a[l].wrapping_add(off) as usize) };
            }
            return;
        }
        for l in 0..W {
            o[l] = view.get(a[l].wrapping_add(off));
        }
    } else {
        for l in 0..W {
            if exec >> l & 1 == 1 {
                o[l] = view.get(a[l].wrapping_add(off));
            }
        }
    }
}

/// `o[l] = a[l] + off < limit ? storage[a[l] + off] : 0` in every lane (`limit` at most the
/// buffer's length, so the clamped index is always inside it): branch-free, whatever the mask.
#[inline(always)]
fn load_below(view: &View, o: &mut Lanes, a: &Lanes, off: u32, limit: usize) {
    if limit == 0 {
        *o = [0; W];
        return;
    }
    if contiguous(a) {
        let start = a[0].wrapping_add(off) as usize;
        if start.checked_add(W).is_some_and(|end| end <= limit) {
            // SAFETY: start..start+W is inside the buffer (limit <= len).
            let src = unsafe { std::slice::from_raw_parts(view.ptr.add(start), W) };
            o.copy_from_slice(src);
            return;
        }
    }
    for l in 0..W {
        let i = a[l].wrapping_add(off) as usize;
        let inside = i < limit;
        // SAFETY: the index is `i` when below `limit` (<= len), else 0 (len > 0 here).
        let v = unsafe { *view.ptr.add(if inside { i } else { 0 }) };
        o[l] = v & (inside as u32).wrapping_neg();
    }
}

/// `regs[dst[j]][l] = storage[a[l] + off + j]` for every `j`: `n = dst.len()` loads at
/// consecutive offsets. `below`: every lane, words at or past `limit` (at most the buffer's
/// length) read 0 (`LdStorageBelow`); else the lanes of `exec`, past the buffer reading 0
/// (`LdStorage`, `limit` = the length). When every lane's words lie below `limit` (one range
/// check for the warp), each lane copies its `n` words without a check.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn load_words(view: &View, regs: &mut [Lanes], dst: &[u32], a: &Lanes, off: u32, limit: usize, exec: u64, below: bool) {
    let base = regs.as_mut_ptr();
    if below || exec == ALL_LANES {
        let hi = a.iter().fold(0u32, |hi, &x| hi.max(x.wrapping_add(off)));
        if hi as usize + dst.len() <= limit {
            // SAFETY: `check_program` verified the table's registers (distinct, by the
            // peephole's construction) lie in the register file; every word read is below
            // `limit` <= the buffer's length.
            unsafe {
                // Four lanes at a time: their rows of words in, transposed, four-lane columns
                // out (so the compiler can use vector shuffles and stores).
                macro_rules! copy {
                    ($n:literal) => {{
                        let d: [*mut u32; $n] = std::array::from_fn(|j| base.add(dst[j] as usize) as *mut u32);
                        for q in (0..W).step_by(4) {
                            let rows: [[u32; $n]; 4] = std::array::from_fn(|k| {
                                std::ptr::read_unaligned(view.ptr.add(a[q + k].wrapping_add(off) as usize) as *const [u32; $n])
                            });
                            for j in 0..$n {
                                std::ptr::write_unaligned(d[j].add(q) as *mut [u32; 4], [rows[0][j], rows[1][j], rows[2][j], rows[3][j]]);
                            }
                        }
                    }};
                }
                match dst.len() {
                    2 => copy!(2),
                    4 => copy!(4),
                    8 => copy!(8),
                    _ => {
                        for (l, &x) in a.iter().enumerate() {
                            let src = view.ptr.add(x.wrapping_add(off) as usize);
                            for (j, &d) in dst.iter().enumerate() {
                                *(base.add(d as usize) as *mut u32).add(l) = *src.add(j);
                            }
                        }
                    }
                }
            }
            return;
        }
    }
    for (j, &d) in dst.iter().enumerate() {
        // SAFETY: as above (a register of the file).
        let o = unsafe { &mut *base.add(d as usize) };
        let o_off = off.wrapping_add(j as u32);
        if below {
            load_below(view, o, a, o_off, limit);
        } else {
            load_storage(view, o, a, o_off, exec);
        }
    }
}

/// Four words at a warp-uniform address as `LdStorageBelowNS` reads them: `start + j`
/// (wrapping) below `bound` and inside the buffer, else 0.
#[inline(always)]
fn uniform_words4(view: &View, start: u32, bound: usize) -> [f32; 4] {
    let limit = view.len.min(bound);
    std::array::from_fn(|j| {
        let i = start.wrapping_add(j as u32) as usize;
        // SAFETY: read only below `limit` <= the buffer's length.
        f32::from_bits(if i < limit { unsafe { *view.ptr.add(i) } } else { 0 })
    })
}

/// The cache model's lookups of `n` words read once for the warp.
fn touch_words(cache: &mut Cache, c: &mut Counters, binding: u8, start: u32, n: u32) {
    for j in 0..n {
        if cache.access(binding, start.wrapping_add(j)) {
            c.cache_hits += 1;
        } else {
            c.cache_misses += 1;
        }
    }
}

#[inline(always)]
fn contiguous(a: &Lanes) -> bool {
    let base = a[0];
    let mut ok = true;
    for (l, &x) in a.iter().enumerate() {
        ok &= x == base.wrapping_add(l as u32);
    }
    ok
}

fn touch_lines(cache: &mut Cache, c: &mut Counters, binding: u8, a: &Lanes, off: u32, exec: u64) {
    let mut last = u32::MAX;
    for l in 0..W {
        if exec >> l & 1 == 1 {
            let line = a[l].wrapping_add(off) / 16;
            if line != last {
                last = line;
                if cache.access(binding, a[l].wrapping_add(off)) {
                    c.cache_hits += 1;
                } else {
                    c.cache_misses += 1;
                }
            }
        }
    }
}

fn atomic_rmw(cell: &AtomicU32, op: AtomicOp, v: u32, cmp: u32) -> u32 {
    let o = Ordering::Relaxed;
    match op {
        AtomicOp::Add => cell.fetch_add(v, o),
        AtomicOp::Sub => cell.fetch_sub(v, o),
        AtomicOp::And => cell.fetch_and(v, o),
        AtomicOp::Or => cell.fetch_or(v, o),
        AtomicOp::Xor => cell.fetch_xor(v, o),
        AtomicOp::UMin => cell.fetch_min(v, o),
        AtomicOp::UMax => cell.fetch_max(v, o),
        AtomicOp::SMin => cell.fetch_update(o, o, |x| Some((x as i32).min(v as i32) as u32)).unwrap_or(0),
        AtomicOp::SMax => cell.fetch_update(o, o, |x| Some((x as i32).max(v as i32) as u32)).unwrap_or(0),
        AtomicOp::Exchange => cell.swap(v, o),
        AtomicOp::CompareExchange => match cell.compare_exchange(cmp, v, o, o) {
            Ok(x) | Err(x) => x,
        },
        AtomicOp::Load => cell.load(o),
        AtomicOp::Store => {
            cell.store(v, o);
            0
        }
    }
}

/// AVX2 on this (x86-64) host, checked once.
fn host_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // QWGLM_SIM_NO_AVX2 (any value) keeps the baseline loop, for comparisons.
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") && std::env::var_os("QWGLM_SIM_NO_AVX2").is_none())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `prog` over `grid` workgroups on up to `threads` workers; returns the counters.
pub fn dispatch(prog: &EntryProgram, mem: &Bindings, grid: [u32; 3], threads: usize, cache_model: bool) -> Counters {
    let total = grid[0] as usize * grid[1] as usize * grid[2] as usize;
    let coords = |i: usize| {
        let i = i as u32;
        [i % grid[0], i / grid[0] % grid[1], i / (grid[0] * grid[1])]
    };
    let threads = threads.max(1).min(total.max(1));
    check_program(prog);
    if threads == 1 || cfg!(target_arch = "wasm32") {
        let mut worker = Worker::new(prog, cache_model);
        for i in 0..total {
            worker.workgroup(mem, coords(i), grid);
        }
        return worker.counters;
    }
    let next = AtomicUsize::new(0);
    let mut sum = Counters::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut worker = Worker::new(prog, cache_model);
                    loop {
                        // Chunks of workgroups keep the shared counter cold.
                        let first = next.fetch_add(8, Ordering::Relaxed);
                        if first >= total {
                            break;
                        }
                        for i in first..(first + 8).min(total) {
                            worker.workgroup(mem, coords(i), grid);
                        }
                    }
                    worker.counters
                })
            })
            .collect();
        for h in handles {
            sum.add(&h.join().expect("simulator worker panicked"));
        }
    });
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_half_for_every_value() {
        for h in 0..=u16::MAX {
            assert_eq!(f16_to_f32(h as u32), half::f16::from_bits(h).to_f32().to_bits(), "f16 bits {h:#06x}");
        }
    }

    #[test]
    fn min_max_follow_fminf_fmaxf() {
        let vals = [0.0f32, -0.0, 1.5, -2.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -3.0e38];
        for &a in &vals {
            for &b in &vals {
                let (mn, mx) = (f32::from_bits(fmin(a.to_bits(), b.to_bits())), f32::from_bits(fmax(a.to_bits(), b.to_bits())));
                if a.is_nan() && b.is_nan() {
                    assert!(mn.is_nan() && mx.is_nan());
                    continue;
                }
                // Equal to Rust's min/max up to the sign of zero, which IEEE leaves open.
                assert!(mn == a.min(b) && mx == a.max(b), "{a} {b}");
                if a == 0.0 && b == 0.0 {
                    assert_eq!((mn.is_sign_negative(), mx.is_sign_negative()), (a.is_sign_negative() || b.is_sign_negative(), a.is_sign_negative() && b.is_sign_negative()));
                }
            }
        }
    }

    #[test]
    fn bit_fields_follow_wgsl() {
        assert_eq!(extract_bits(0xabcd_1234, 4, 8, false), 0x23);
        assert_eq!(extract_bits(0x0000_00f0, 4, 4, true), u32::MAX);
        assert_eq!(extract_bits(7, 40, 4, false), 0);
        assert_eq!(insert_bits(0xffff_ffff, 0, 8, 8), 0xffff_00ff);
    }
}
