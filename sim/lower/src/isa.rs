//! SIMT bytecode. A warp runs W lanes in lockstep; every register holds one 32-bit word per lane
//! (registers are untyped: f32 values are their bits, bools are 0/1), so a bitcast costs nothing.
//! Control flow is structured: an exec mask says which lanes run, and mask slots (`MaskSlot`)
//! hold the masks that `if`/`loop`/`return` need to restore or collect lanes. Slots are allocated
//! per program point at compile time, so there is no runtime mask stack.
//!
//! Memory is addressed in 32-bit words: every load or store names a register holding a per-lane
//! word address plus an immediate word offset. Out-of-bounds policy: reads give 0, writes are
//! dropped (WGSL allows this; the same policy as naga's `ReadZeroSkipWrite`).

use serde::{Deserialize, Serialize};

/// Index of a vector register (one word per lane).
pub type Reg = u32;
/// Index of a scalar register: one word for the whole warp, for values every lane shares
/// (uniforms, workgroup ids, constants and what is computed from them only).
pub type SReg = u32;
/// Index of a mask slot.
pub type MaskSlot = u16;
/// "No slot" in `Join`.
pub const NO_MASK: MaskSlot = u16::MAX;
/// "No register" in `UnpackFSMulAdd`'s `c`.
pub const NO_REG: Reg = u32::MAX;
/// Register 0 is zero in every lane: the address register of accesses with constant addresses.
pub const ZERO: Reg = 0;
/// Scalar register 0 is zero.
pub const SZERO: SReg = 0;

/// Two-operand ALU ops, typed where the bits are interpreted (U = u32, S = i32, F = f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    IAdd,
    ISub,
    IMul,
    UDiv,
    SDiv,
    URem,
    SRem,
    FAdd,
    FSub,
    FMul,
    FDiv,
    FRem,
    And,
    Or,
    Xor,
    Shl,
    ShrU,
    ShrS,
    IEq,
    INe,
    ULt,
    ULe,
    UGt,
    UGe,
    SLt,
    SLe,
    SGt,
    SGe,
    FEq,
    FNe,
    FLt,
    FLe,
    FGt,
    FGe,
    UMin,
    UMax,
    SMin,
    SMax,
    FMin,
    FMax,
    FPow,
    FAtan2,
    FStep,
}

/// One-operand ALU ops and conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnOp {
    Not,
    LogicalNot,
    INeg,
    FNeg,
    SAbs,
    FAbs,
    FExp,
    FExp2,
    FLog,
    FLog2,
    FSqrt,
    FRsqrt,
    FSin,
    FCos,
    FTan,
    FTanh,
    FFloor,
    FCeil,
    FRound,
    FTrunc,
    FFract,
    FSign,
    SSign,
    U2F,
    S2F,
    F2U,
    F2S,
    /// Any non-zero word to 1.
    ToBool,
    /// 1.0 for true, 0.0 for false.
    Bool2F,
    CountOnes,
    LeadingZeros,
    TrailingZeros,
    ReverseBits,
    /// Low / high half of a word as f16, widened to f32 (`unpack2x16float`).
    F16LoToF32,
    F16HiToF32,
    /// `quantizeToF16`; also the rounding of every f16 result (f16 values live in registers as
    /// f32 words holding the f16 value: round to nearest even, overflow to infinity, f16
    /// subnormals kept).
    QuantizeF16,
}

/// Read-modify-write functions of `atomic*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AtomicOp {
    Add,
    Sub,
    And,
    Or,
    Xor,
    UMin,
    UMax,
    SMin,
    SMax,
    Exchange,
    /// Compare-exchange: writes when the old value equals the `cmp` register.
    CompareExchange,
    /// A plain atomic load (`atomicLoad`).
    Load,
    /// A plain atomic store (`atomicStore`).
    Store,
}

/// Memory of an atomic op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AtomicSpace {
    Storage(u8),
    Workgroup,
}

/// Memory of a cooperative-matrix load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoopSpace {
    Storage(u8),
    Workgroup,
}

/// Lanes of a subgroup: the unit that owns a cooperative matrix. A warp of W lanes (W a multiple
/// of it) holds W / SUBGROUP subgroups, each with its own matrices.
pub const SUBGROUP: usize = 32;
/// Side of the cooperative matrices the simulator implements (16 x 16, the engine's only shape).
pub const COOP_DIM: usize = 16;
/// Registers of one cooperative matrix (in a table): 16 x 16 elements over 32 lanes. Element
/// (row i, column j), e = 16 i + j, is lane `32 h + e % 32` of register `tables[t + e / 32]` for
/// subgroup h of the warp.
pub const COOP_REGS: u32 = (COOP_DIM * COOP_DIM / SUBGROUP) as u32;

/// Built-in values preloaded into registers when a warp starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builtin {
    LocalIndex,
    LocalId(u8),
    GlobalId(u8),
    WorkgroupId(u8),
    NumWorkgroups(u8),
    WorkgroupSize(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Inst {
    // ---- values
    /// `d = imm` in every lane.
    Movi { d: Reg, imm: u32 },
    Mov { d: Reg, s: Reg },
    /// `d = s` in active lanes only: a store into a function variable.
    MovMasked { d: Reg, s: Reg },
    /// Superinstruction (peephole of one or two `FAdd`s whose sum a `MovMasked` stores):
    /// `d = a + (b + c)` (`a + b` when `c` is `NO_REG`) in active lanes only, f32, rounded after
    /// each add as the separate instructions: `acc += x + y` into a function variable.
    AddMasked { d: Reg, a: Reg, b: Reg, c: Reg },
    Bin { op: BinOp, d: Reg, a: Reg, b: Reg },
    /// `Bin` with an immediate right operand (constant folded by the compiler).
    BinImm { op: BinOp, d: Reg, a: Reg, imm: u32 },
    Un { op: UnOp, d: Reg, a: Reg },
    /// `d = a * b + c` (f32, fused).
    Fma { d: Reg, a: Reg, b: Reg, c: Reg },
    /// Superinstruction (peephole of `FMul` then `FAdd`): `d = (a * b) + c` in f32, rounded after
    /// the multiply and after the add, exactly as the two instructions (not an FMA).
    MulAdd { d: Reg, a: Reg, b: Reg, c: Reg },
    /// `d = c ? t : f`.
    Select { d: Reg, c: Reg, t: Reg, f: Reg },
    /// `extractBits(e, off, cnt)`, sign-extending when `signed`.
    ExtractBits { signed: bool, d: Reg, e: Reg, off: Reg, cnt: Reg },
    InsertBits { d: Reg, e: Reg, n: Reg, off: Reg, cnt: Reg },
    /// `d = regs[table[idx + off]]` per lane, the index clamped into `len`: dynamic indexing of a
    /// vector or a function-local array.
    Gather { d: Reg, table: u32, len: u32, idx: Reg, off: u32 },
    /// `regs[table[idx + off]] = s` in active lanes (index clamped).
    ScatterMasked { table: u32, len: u32, idx: Reg, off: u32, s: Reg },
    /// Superinstruction (peephole of `>>` then `&`): `d = (a >> shift) & mask`.
    ShrAnd { d: Reg, a: Reg, shift: u32, mask: u32 },
    /// Superinstruction (peephole of a nibble/byte unpack): `d = f32((a >> shift) & mask) - sub`
    /// (`sub` is f32 bits); the u32 -> f32 -> subtract chain of the quant formats.
    UnpackF { d: Reg, a: Reg, shift: u32, mask: u32, sub: u32 },
    /// Superinstruction: `d = f32((a >> s) & mask) - sub` with the shift per lane in register `s`.
    UnpackFVar { d: Reg, a: Reg, s: Reg, mask: u32, sub: u32 },
    /// Superinstruction: `UnpackF` times a per-lane scale, `d = (f32((a >> shift) & mask) - sub) * m`
    /// (rounded as the separate instructions): the `d * (q - c)` of the quant formats.
    UnpackFMul { d: Reg, a: Reg, shift: u32, mask: u32, sub: u32, m: Reg },
    /// Superinstruction: a nibble/byte field shifted by a warp-uniform amount, converted, offset,
    /// scaled and (unless `c` is `NO_REG`) added to: `d = (f32((((a >> shift) & mask1) >>
    /// (sregs[s] & 31)) & mask) - sub) * m + c`, rounded after each step as the separate
    /// instructions. The `d * q + m` unpacking of the quant formats when the field's shift comes
    /// from a warp-uniform loop counter.
    UnpackFSMulAdd { d: Reg, a: Reg, s: SReg, shift: u32, mask1: u32, mask: u32, sub: u32, m: Reg, c: Reg },
    /// Superinstruction: `UnpackFSMulAdd` (with `c`, no `sub`) feeding a multiply-add, the
    /// dequantized weight times an activation: `w = f32((((a >> shift) & mask1) >> (sregs[s] &
    /// 31)) & mask) * m + c`, then `d = w * x + acc` (`d = w * x` when `acc` is `NO_REG`),
    /// rounded after each step as the separate instructions.
    UnpackFSDot { d: Reg, a: Reg, s: SReg, shift: u32, mask1: u32, mask: u32, m: Reg, c: Reg, x: Reg, acc: Reg },
    /// Superinstruction: `SExtF` feeding a multiply-add, `d = f32(i32(a << shl) >> shr) * x + acc`
    /// (`* x` only when `acc` is `NO_REG`), rounded as the separate instructions: the 8-bit
    /// formats' dot products.
    SExtDot { d: Reg, a: Reg, shl: u32, shr: u32, x: Reg, acc: Reg },
    /// Superinstruction: four `UnpackFSDot`s on one word `a`, chained through their
    /// accumulators (each result the next one's `acc`, the first's `acc` optional), with the four
    /// activations read by the instruction itself at a warp-uniform address, as the
    /// `LdStorageBelowNS` that fed them: `x[j] = i < sregs[xbound] ? storage[xbinding][i] : 0`
    /// with `i = sregs[xaddr] + xoff + j` (wrapping; no bound when `xbound` is `NO_REG`; out of
    /// the buffer reads 0). Step `j` unpacks with shift `(shifts >> 8j) & 31`; every step rounds
    /// as the `UnpackFSDot` it replaces, so `d` is bit-identical to the chain. The 4-weight dot
    /// products of the Q4_1-style formats in one dispatch, without the broadcast activations.
    UnpackFSDot4 { d: Reg, a: Reg, s: SReg, shifts: u32, mask1: u32, mask: u32, m: Reg, c: Reg, acc: Reg, xbinding: u8, xaddr: SReg, xoff: u32, xbound: SReg },
    /// Superinstruction: four `SExtDot`s on one word `a` chained the same way (`shl` of step `j`
    /// = `(shls >> 8j) & 31`, one `shr`), activations read as in `UnpackFSDot4`: the 8-bit
    /// formats' 4-weight dot products.
    SExtDot4 { d: Reg, a: Reg, shls: u32, shr: u32, acc: Reg, xbinding: u8, xaddr: SReg, xoff: u32, xbound: SReg },
    /// Superinstruction (peephole of `<<`, arithmetic `>>` and the i32 -> f32 conversion):
    /// `d = f32(i32(a << shl) >> shr)`, the sign-extended bytes of the 8-bit quant formats.
    SExtF { d: Reg, a: Reg, shl: u32, shr: u32 },
    /// Superinstruction: `UnpackFVar` times a per-lane scale.
    UnpackFVarMul { d: Reg, a: Reg, s: Reg, mask: u32, sub: u32, m: Reg },

    // ---- scalar unit (one word per warp; runs whatever the exec mask)
    SMovi { d: SReg, imm: u32 },
    SBin { op: BinOp, d: SReg, a: SReg, b: SReg },
    SBinImm { op: BinOp, d: SReg, a: SReg, imm: u32 },
    SUn { op: UnOp, d: SReg, a: SReg },
    SSelect { d: SReg, c: SReg, t: SReg, f: SReg },
    /// `d = s` when any lane is active: a store into a warp-uniform function variable (a scalar
    /// register). Code that no lane runs (after a uniform `break` or `continue`) still runs the
    /// scalar unit, and must not change the variable.
    SMovIfAny { d: SReg, s: SReg },
    /// `d = uniform[a + off]` with a scalar address.
    SLdUniform { d: SReg, addr: SReg, off: u32 },
    /// Vector `d = s` in every lane.
    Broadcast { d: Reg, s: SReg },
    /// `d = a op s`: a vector and a scalar operand.
    BinVS { op: BinOp, d: Reg, a: Reg, s: SReg },

    // ---- memory (word addresses: register + immediate)
    LdStorage { d: Reg, binding: u8, addr: Reg, off: u32 },
    /// Superinstruction (peephole of a guarded read `i < bound ? a[i] : 0`): per lane
    /// `i = addr + off` (wrapping), `d = i < sregs[bound] ? storage[i] : 0` (out of the buffer
    /// reads 0 as always). Written in every lane; inactive lanes get values nobody reads.
    LdStorageBelow { d: Reg, binding: u8, addr: Reg, off: u32, bound: SReg },
    /// Superinstruction (peephole of loads from one address register at consecutive offsets):
    /// `regs[tables[table + j]] = storage[addr + off + j]` for `j < n`, in the lanes of exec
    /// (the others keep their values), exactly as the `n` separate `LdStorage`s.
    LdStorageN { table: u32, n: u32, binding: u8, addr: Reg, off: u32 },
    /// Superinstruction: `n` consecutive `LdStorageBelow`s from one address register,
    /// `regs[tables[table + j]] = i < sregs[bound] ? storage[i] : 0` with `i = addr + off + j`.
    LdStorageBelowN { table: u32, n: u32, binding: u8, addr: Reg, off: u32, bound: SReg },
    /// Superinstruction: guarded reads at a warp-uniform (scalar) address, `n` consecutive words
    /// broadcast to every lane: `regs[tables[table + j]] = i < sregs[bound] ? storage[i] : 0`
    /// with `i = sregs[addr] + off + j` (wrapping; out of the buffer reads 0). The `x_at`
    /// activation reads of a loop whose counter is warp-uniform. With `bound` = `NO_REG` the
    /// reads are unguarded (`LdStorage`/`LdStorageN` at a broadcast address; out of the buffer
    /// reads 0).
    LdStorageBelowNS { table: u32, n: u32, binding: u8, addr: SReg, off: u32, bound: SReg },
    StStorage { s: Reg, binding: u8, addr: Reg, off: u32 },
    LdUniform { d: Reg, addr: Reg, off: u32 },
    LdShared { d: Reg, addr: Reg, off: u32 },
    StShared { s: Reg, addr: Reg, off: u32 },
    /// Lanes run one after another in lane order; `d` gets the old value.
    Atomic { op: AtomicOp, space: AtomicSpace, d: Reg, addr: Reg, off: u32, v: Reg, cmp: Reg },
    /// Cooperative matrices (subgroup-wide 16 x 16 values, `COOP_REGS` registers named by a table,
    /// see `COOP_REGS`): each op runs once per 32-lane subgroup of the warp that has an active
    /// lane, for the whole subgroup (WGSL requires uniform control flow there), reading its base
    /// address and stride from the subgroup's first active lane. Elements are one word apart in
    /// memory (an f16 element is one word in workgroup memory, see `compile`); element (i, j) is
    /// at `addr + off + i * stride + j` (`row_major`) or `addr + off + j * stride + i`
    /// (column-major), reads outside the memory give 0, writes there are dropped.
    /// `coopLoad` / `coopLoadT`: `d` is a table of `COOP_REGS` distinct registers.
    CoopLoad { d: u32, space: CoopSpace, addr: Reg, off: u32, stride: Reg, row_major: bool },
    /// `coopStore` / `coopStoreT` of the matrix in table `s`.
    CoopStore { s: u32, space: CoopSpace, addr: Reg, off: u32, stride: Reg, row_major: bool },
    /// `coopMultiplyAdd`: `d = a * b + c` (tables; `d` distinct registers), per output element
    /// `acc = c[i][j]; for k in 0..16 { acc = acc + a[i][k] * b[k][j] }` in f32, each product and
    /// each sum rounded to f32 in that order (f16 operands multiply exactly); with `f16` (an f16
    /// accumulator) the result is rounded to f16 at the end.
    CoopMulAdd { d: u32, a: u32, b: u32, c: u32, f16: bool },

    /// `d = (words of binding - offset_words) / stride_words`: `arrayLength`.
    ArrayLength { d: Reg, binding: u8, offset_words: u32, stride_words: u32 },

    // ---- control (exec mask)
    /// `masks[m] = exec`.
    SaveExec { m: MaskSlot },
    /// `exec &= (c != 0)`.
    AndCond { c: Reg },
    /// `exec = masks[m] & (c == 0)`: the else branch of an `if`.
    ElseOf { m: MaskSlot, c: Reg },
    /// `exec = masks[saved] & !(masks[a] | masks[b] | masks[c])` (slots that are `NO_MASK` are
    /// skipped): the join after an `if`, minus lanes that left by break, continue or return.
    Join { saved: MaskSlot, a: MaskSlot, b: MaskSlot, c: MaskSlot },
    ClearMask { m: MaskSlot },
    /// `masks[m] |= exec; exec = 0`: break, continue, return.
    Leave { m: MaskSlot },
    /// `exec |= masks[m]`: continued lanes rejoin before the continuing block.
    Rejoin { m: MaskSlot },
    /// `exec = masks[m]`.
    ExecFrom { m: MaskSlot },
    /// `masks[m] |= exec & c; exec &= !c`: `break if`.
    BreakIf { m: MaskSlot, c: Reg },
    /// `masks[m] |= exec & !c; exec &= c`: the `if (c) {} else { break; }` of a `for` loop.
    BreakUnless { m: MaskSlot, c: Reg },
    /// Jumps on a scalar (warp-uniform) condition: uniform branches need no mask work.
    JumpIfZeroS { c: SReg, to: u32 },
    JumpIfNonZeroS { c: SReg, to: u32 },
    JumpIfNone { to: u32 },
    JumpIfAny { to: u32 },
    Jump { to: u32 },
    /// Workgroup barrier: the warp waits until every warp of its workgroup got here.
    Barrier,
    Halt,
}

/// One compiled entry point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryProgram {
    pub name: String,
    pub workgroup_size: [u32; 3],
    pub insts: Vec<Inst>,
    pub n_regs: u32,
    /// Scalar registers (scalar register 0 is zero).
    pub n_sregs: u32,
    pub n_masks: u16,
    /// Register lists of `Gather`/`ScatterMasked`.
    pub tables: Vec<Reg>,
    /// Words of `var<workgroup>` memory (zeroed per workgroup).
    pub shared_words: u32,
    /// Registers preloaded with built-in values.
    pub builtins: Vec<(Builtin, Reg)>,
    /// Scalar registers preloaded with warp-uniform built-in values (workgroup id, sizes).
    pub scalar_builtins: Vec<(Builtin, SReg)>,
    /// Storage bindings the entry point uses (binding numbers).
    pub storage_bindings: Vec<u8>,
}

/// Every entry point of one kernel file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelProgram {
    /// Path relative to `shaders/`.
    pub file: String,
    pub entries: Vec<EntryProgram>,
}

impl KernelProgram {
    pub fn entry(&self, name: &str) -> Option<&EntryProgram> {
        self.entries.iter().find(|e| e.name == name)
    }
}
