//! Peephole superinstructions over the lowered bytecode. Patterns are found by the shape of the
//! code (single-use temporaries in straight-line code), not by kernel name:
//! - `(a >> k) & m` (immediates) → `ShrAnd`;
//! - `f32((a >> k) & m)`, `f32((a >> s) & m)`, `f32(a & m)`, each optionally `- c` → `UnpackF` /
//!   `UnpackFVar`: the nibble and byte unpacking of the quantised formats;
//! - `i = a + k; c = i < bound; v = storage[i]; c ? v : 0` (bound warp-uniform) →
//!   `LdStorageBelow`: the bounds-guarded reads (`x_at`-style helpers) in one instruction;
//! - `m * unpack` (f32) → `UnpackFMul` / `UnpackFVarMul`: the scale of the quant formats;
//! - `x + a * b` (f32, the product single-use) → `MulAdd` (two roundings, as before): dot
//!   products and accumulations;
//! - `storage[(a + k) + off]` → `storage[a + (k + off)]` (single-use address), then loads from
//!   one address register at consecutive offsets → `LdStorageN` / `LdStorageBelowN`: the
//!   activation and weight words a lane reads side by side, as one multi-word load;
//! - at a warp-uniform (scalar) address, the guarded and plain reads → `LdStorageBelowNS` (one
//!   read per word for the warp, broadcast); a field shifted by a uniform amount, scaled and
//!   offset → `UnpackFSMulAdd`, and with the multiply-add of its dot product → `UnpackFSDot`;
//!   sign-extended bytes → `SExtF`, into their multiply-add → `SExtDot`; four of those chained
//!   through their accumulators on one word, their activations from one `LdStorageBelowNS` →
//!   `UnpackFSDot4` / `SExtDot4`, which read the activations themselves;
//! - `v = a + (x + y)` (or `a + x`) stored into a function variable by `MovMasked` → `AddMasked`;
//! - scalar copies are propagated, unread scalar ops dropped, and loop-invariant scalar ops
//!   hoisted in front of their loop.

use crate::isa::*;

/// Vector register written by `inst`, if any.
fn dest(inst: &Inst) -> Option<Reg> {
    Some(match *inst {
        Inst::Movi { d, .. }
        | Inst::Mov { d, .. }
        | Inst::MovMasked { d, .. }
        | Inst::AddMasked { d, .. }
        | Inst::Bin { d, .. }
        | Inst::BinImm { d, .. }
        | Inst::Un { d, .. }
        | Inst::Fma { d, .. }
        | Inst::MulAdd { d, .. }
        | Inst::Select { d, .. }
        | Inst::ExtractBits { d, .. }
        | Inst::InsertBits { d, .. }
        | Inst::Gather { d, .. }
        | Inst::ShrAnd { d, .. }
        | Inst::UnpackF { d, .. }
        | Inst::UnpackFVar { d, .. }
        | Inst::UnpackFMul { d, .. }
        | Inst::UnpackFSMulAdd { d, .. }
        | Inst::UnpackFSDot { d, .. }
        | Inst::SExtDot { d, .. }
        | Inst::UnpackFSDot4 { d, .. }
        | Inst::SExtDot4 { d, .. }
        | Inst::SExtF { d, .. }
        | Inst::UnpackFVarMul { d, .. }
        | Inst::Broadcast { d, .. }
        | Inst::BinVS { d, .. }
        | Inst::LdStorage { d, .. }
        | Inst::LdStorageBelow { d, .. }
        | Inst::LdUniform { d, .. }
        | Inst::LdShared { d, .. }
        | Inst::Atomic { d, .. }
        | Inst::ArrayLength { d, .. } => d,
        _ => return None,
    })
}

/// Vector registers `inst` reads (its destination too where it keeps inactive lanes).
fn sources(inst: &Inst, out: &mut Vec<Reg>) {
    out.clear();
    match *inst {
        Inst::Mov { s, .. } | Inst::Un { a: s, .. } | Inst::BinImm { a: s, .. } | Inst::ShrAnd { a: s, .. } | Inst::UnpackF { a: s, .. } | Inst::SExtF { a: s, .. } => out.push(s),
        Inst::MovMasked { d, s } => out.extend([d, s]),
        Inst::AddMasked { d, a, b, c } => {
            out.extend([d, a, b]);
            if c != NO_REG {
                out.push(c);
            }
        }
        Inst::Bin { a, b, .. } | Inst::UnpackFVar { a, s: b, .. } => out.extend([a, b]),
        Inst::Fma { a, b, c, .. } | Inst::MulAdd { a, b, c, .. } | Inst::UnpackFVarMul { a, s: b, m: c, .. } => out.extend([a, b, c]),
        Inst::UnpackFMul { a, m, .. } => out.extend([a, m]),
        Inst::UnpackFSMulAdd { a, m, c, .. } => {
            out.extend([a, m]);
            if c != NO_REG {
                out.push(c);
            }
        }
        Inst::UnpackFSDot { a, m, c, x, acc, .. } => {
            out.extend([a, m, c, x]);
            if acc != NO_REG {
                out.push(acc);
            }
        }
        Inst::SExtDot { a, x, acc, .. } => {
            out.extend([a, x]);
            if acc != NO_REG {
                out.push(acc);
            }
        }
        Inst::UnpackFSDot4 { a, m, c, acc, .. } => {
            out.extend([a, m, c]);
            if acc != NO_REG {
                out.push(acc);
            }
        }
        Inst::SExtDot4 { a, acc, .. } => {
            out.push(a);
            if acc != NO_REG {
                out.push(acc);
            }
        }
        Inst::Select { c, t, f, .. } => out.extend([c, t, f]),
        Inst::ExtractBits { e, off, cnt, .. } => out.extend([e, off, cnt]),
        Inst::InsertBits { e, n, off, cnt, .. } => out.extend([e, n, off, cnt]),
        Inst::Gather { idx, .. } => out.push(idx),
        Inst::ScatterMasked { idx, s, .. } => out.extend([idx, s]),
        Inst::BinVS { a, .. } => out.push(a),
        Inst::LdStorage { d, addr, .. } | Inst::LdShared { d, addr, .. } => out.extend([d, addr]),
        Inst::LdUniform { addr, .. } | Inst::LdStorageBelow { addr, .. } => out.push(addr),
        Inst::StStorage { s, addr, .. } | Inst::StShared { s, addr, .. } => out.extend([s, addr]),
        Inst::Atomic { d, addr, v, cmp, .. } => out.extend([d, addr, v, cmp]),
        Inst::AndCond { c } | Inst::ElseOf { c, .. } | Inst::BreakIf { c, .. } | Inst::BreakUnless { c, .. } => out.push(c),
        // (Their table registers count as read and written by `Uses`: never fused.)
        Inst::CoopLoad { addr, stride, .. } | Inst::CoopStore { addr, stride, .. } => out.extend([addr, stride]),
        _ => {}
    }
}

/// Applies `f` to every vector register `inst` reads, except a destination it also reads (the
/// inactive lanes it keeps).
fn map_sources(inst: &mut Inst, f: impl Fn(Reg) -> Reg) {
    let g = |r: &mut Reg| *r = f(*r);
    match inst {
        Inst::Mov { s, .. } | Inst::MovMasked { s, .. } | Inst::Un { a: s, .. } | Inst::BinImm { a: s, .. } | Inst::ShrAnd { a: s, .. } | Inst::UnpackF { a: s, .. } | Inst::SExtF { a: s, .. } => g(s),
        Inst::Bin { a, b, .. } | Inst::UnpackFVar { a, s: b, .. } | Inst::UnpackFMul { a, m: b, .. } => (g(a), g(b)).1,
        Inst::AddMasked { a, b, c, .. } => {
            (g(a), g(b));
            if *c != NO_REG {
                g(c);
            }
        }
        Inst::UnpackFSMulAdd { a, m, c, .. } => {
            (g(a), g(m));
            if *c != NO_REG {
                g(c);
            }
        }
        Inst::UnpackFSDot { a, m, c, x, acc, .. } => {
            (g(a), g(m), g(c), g(x));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::SExtDot { a, x, acc, .. } => {
            (g(a), g(x));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::UnpackFSDot4 { a, m, c, acc, .. } => {
            (g(a), g(m), g(c));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::SExtDot4 { a, acc, .. } => {
            g(a);
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::Fma { a, b, c, .. } | Inst::MulAdd { a, b, c, .. } | Inst::UnpackFVarMul { a, s: b, m: c, .. } => (g(a), g(b), g(c)).2,
        Inst::Select { c, t, f, .. } => (g(c), g(t), g(f)).2,
        Inst::ExtractBits { e, off, cnt, .. } => (g(e), g(off), g(cnt)).2,
        Inst::InsertBits { e, n, off, cnt, .. } => (g(e), g(n), g(off), g(cnt)).3,
        Inst::Gather { idx, .. } | Inst::BinVS { a: idx, .. } => g(idx),
        Inst::ScatterMasked { idx, s, .. } => (g(idx), g(s)).1,
        Inst::LdStorage { addr, .. } | Inst::LdShared { addr, .. } | Inst::LdUniform { addr, .. } | Inst::LdStorageBelow { addr, .. } => g(addr),
        Inst::LdStorageN { addr, .. } | Inst::LdStorageBelowN { addr, .. } => g(addr),
        Inst::StStorage { s, addr, .. } | Inst::StShared { s, addr, .. } => (g(s), g(addr)).1,
        Inst::Atomic { addr, v, cmp, .. } => (g(addr), g(v), g(cmp)).2,
        Inst::AndCond { c } | Inst::ElseOf { c, .. } | Inst::BreakIf { c, .. } | Inst::BreakUnless { c, .. } => g(c),
        Inst::CoopLoad { addr, stride, .. } | Inst::CoopStore { addr, stride, .. } => (g(addr), g(stride)).1,
        _ => {}
    }
}

/// Copy propagation: `d = s` (`Mov`) where `d` is written once and all its reads follow in the
/// same basic block while `s` is unchanged: the readers read `s`, and the copy goes (the loads
/// of function variables, e.g. a loop counter read several times per iteration).
fn propagate_copies(prog: &mut EntryProgram) {
    let mut insts = std::mem::take(&mut prog.insts);
    let uses = Uses::of(prog, &insts);
    let mut removed = vec![false; insts.len()];
    let mut src = Vec::new();
    for i in 0..insts.len() {
        let Inst::Mov { d, s } = insts[i] else { continue };
        // (Registers of dynamically indexed tables change through `ScatterMasked`, which
        // `dest` does not name: never propagated.)
        if d == s || d == ZERO || uses.writes[d as usize] != 1 || uses.def_at[d as usize] != i || prog.tables.contains(&s) {
            continue;
        }
        let (mut left, mut readers, mut k) = (uses.reads[d as usize] as usize, Vec::new(), i + 1);
        let ok = loop {
            if left == 0 {
                break true;
            }
            if k >= insts.len() || uses.block_start[k] {
                break false;
            }
            sources(&insts[k], &mut src);
            let n = src.iter().filter(|&&r| r == d).count();
            if n > 0 {
                readers.push(k);
                left = left.saturating_sub(n);
            }
            // `s` may change only at (or after) the last read: a reader reads before it writes.
            if dest(&insts[k]) == Some(s) && left > 0 {
                break false;
            }
            k += 1;
        };
        // A reader that also keeps its destination's lanes must not read `d` that way.
        if !ok || readers.iter().any(|&k| dest(&insts[k]) == Some(d)) {
            continue;
        }
        for &k in &readers {
            map_sources(&mut insts[k], |r| if r == d { s } else { r });
        }
        removed[i] = true;
    }
    prog.insts = compact(insts, &removed);
}

/// `insts` without the `removed` ones; jumps move to the next kept instruction.
fn compact(insts: Vec<Inst>, removed: &[bool]) -> Vec<Inst> {
    let mut new_index = Vec::with_capacity(insts.len() + 1);
    let mut kept = 0u32;
    for &r in removed {
        new_index.push(kept);
        kept += !r as u32;
    }
    new_index.push(kept);
    insts
        .into_iter()
        .zip(removed)
        .filter(|(_, &r)| !r)
        .map(|(mut inst, _)| {
            match &mut inst {
                Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::Jump { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } => {
                    *to = new_index[*to as usize]
                }
                _ => {}
            }
            inst
        })
        .collect()
}

fn jump_target(inst: &Inst) -> Option<u32> {
    match *inst {
        Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::Jump { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } => Some(to),
        _ => None,
    }
}

struct Uses {
    reads: Vec<u32>,
    writes: Vec<u32>,
    def_at: Vec<usize>,
    /// Instruction index starting a basic block (a jump target or right after a jump).
    block_start: Vec<bool>,
}

impl Uses {
    fn of(prog: &EntryProgram, insts: &[Inst]) -> Self {
        let n = prog.n_regs as usize;
        let mut u = Uses { reads: vec![0; n], writes: vec![0; n], def_at: vec![usize::MAX; n], block_start: vec![false; insts.len() + 1] };
        // Preloaded and table registers are never single-use temporaries.
        for &(_, r) in &prog.builtins {
            u.writes[r as usize] += 2;
        }
        for &r in &prog.tables {
            u.reads[r as usize] += 2;
            u.writes[r as usize] += 2;
        }
        let mut src = Vec::new();
        for (i, inst) in insts.iter().enumerate() {
            sources(inst, &mut src);
            for &r in &src {
                u.reads[r as usize] += 1;
            }
            if let Some(d) = dest(inst) {
                u.writes[d as usize] += 1;
                u.def_at[d as usize] = i;
            }
            if let Some(to) = jump_target(inst) {
                u.block_start[to as usize] = true;
                u.block_start[i + 1] = true;
            }
            if matches!(inst, Inst::Barrier | Inst::Halt) {
                u.block_start[i + 1] = true;
            }
        }
        u
    }

    /// The instruction defining `r`, when `r` is written once and read once, by the instruction
    /// at `user` in the same basic block.
    fn single_use_def(&self, r: Reg, user: usize) -> Option<usize> {
        let r = r as usize;
        let i = self.def_at[r];
        (self.writes[r] == 1 && self.reads[r] == 1 && i < user && !self.block_start[i + 1..=user].iter().any(|&b| b)).then_some(i)
    }
}

/// Scalar register written by `inst`, if any.
fn sdest(inst: &Inst) -> Option<SReg> {
    match *inst {
        Inst::SMovi { d, .. } | Inst::SBin { d, .. } | Inst::SBinImm { d, .. } | Inst::SUn { d, .. } | Inst::SSelect { d, .. } | Inst::SLdUniform { d, .. } | Inst::SMovIfAny { d, .. } => Some(d),
        _ => None,
    }
}

/// True when every instruction strictly between `from` and `to` only computes values (no exec
/// mask change, no store or atomic, no control), so a load may move from `from` to `to`, and
/// none writes scalar register `s`.
fn pure_between(insts: &[Inst], removed: &[bool], from: usize, to: usize, s: SReg) -> bool {
    (from + 1..to).all(|k| {
        removed[k]
            || match insts[k] {
                Inst::Atomic { .. } => false,
                ref i if dest(i).is_some() => true,
                ref i => sdest(i).is_some_and(|d| d != s),
            }
    })
}

/// True when no instruction strictly between `from` and `to` writes one of `regs`.
fn unchanged(insts: &[Inst], removed: &[bool], from: usize, to: usize, regs: &[Reg]) -> bool {
    (from + 1..to).all(|k| removed[k] || dest(&insts[k]).is_none_or(|d| !regs.contains(&d)))
}

/// Scalar registers `inst` reads.
fn ssources(inst: &Inst, out: &mut Vec<SReg>) {
    out.clear();
    match *inst {
        Inst::SBin { a, b, .. } => out.extend([a, b]),
        Inst::SBinImm { a, .. } | Inst::SUn { a, .. } | Inst::SLdUniform { addr: a, .. } | Inst::SMovIfAny { s: a, .. } => out.push(a),
        Inst::SSelect { c, t, f, .. } => out.extend([c, t, f]),
        Inst::Broadcast { s, .. } | Inst::BinVS { s, .. } | Inst::UnpackFSMulAdd { s, .. } | Inst::UnpackFSDot { s, .. } => out.push(s),
        Inst::LdStorageBelow { bound, .. } | Inst::LdStorageBelowN { bound, .. } => out.push(bound),
        Inst::LdStorageBelowNS { addr, bound, .. } => {
            out.push(addr);
            if bound != NO_REG {
                out.push(bound);
            }
        }
        Inst::UnpackFSDot4 { s, xaddr, xbound, .. } => {
            out.extend([s, xaddr]);
            if xbound != NO_REG {
                out.push(xbound);
            }
        }
        Inst::SExtDot4 { xaddr, xbound, .. } => {
            out.push(xaddr);
            if xbound != NO_REG {
                out.push(xbound);
            }
        }
        Inst::JumpIfZeroS { c, .. } | Inst::JumpIfNonZeroS { c, .. } => out.push(c),
        _ => {}
    }
}

/// Applies `f` to every scalar register `inst` reads.
fn map_ssources(inst: &mut Inst, f: impl Fn(SReg) -> SReg) {
    let g = |r: &mut SReg| *r = f(*r);
    match inst {
        Inst::SBin { a, b, .. } => (g(a), g(b)).1,
        Inst::SBinImm { a, .. } | Inst::SUn { a, .. } | Inst::SLdUniform { addr: a, .. } | Inst::SMovIfAny { s: a, .. } => g(a),
        Inst::SSelect { c, t, f, .. } => (g(c), g(t), g(f)).2,
        Inst::Broadcast { s, .. } | Inst::BinVS { s, .. } | Inst::UnpackFSMulAdd { s, .. } | Inst::UnpackFSDot { s, .. } => g(s),
        Inst::LdStorageBelow { bound, .. } | Inst::LdStorageBelowN { bound, .. } => g(bound),
        Inst::LdStorageBelowNS { addr, bound, .. } => {
            g(addr);
            if *bound != NO_REG {
                g(bound);
            }
        }
        Inst::UnpackFSDot4 { s, xaddr, xbound, .. } => {
            (g(s), g(xaddr));
            if *xbound != NO_REG {
                g(xbound);
            }
        }
        Inst::SExtDot4 { xaddr, xbound, .. } => {
            g(xaddr);
            if *xbound != NO_REG {
                g(xbound);
            }
        }
        Inst::JumpIfZeroS { c, .. } | Inst::JumpIfNonZeroS { c, .. } => g(c),
        _ => {}
    }
}

/// `LdStorageBelowNS`: the guarded reads of `x_at` at a scalar address, found in the shape the
/// lowering gives them (scalar index and compare, broadcasts for the vector load and select),
/// then merged where consecutive words are read from one base; scalar instructions left unread
/// go.
fn fuse_uniform_reads(prog: &EntryProgram, insts: &mut [Inst], uses: &Uses, removed: &mut [bool], new_tables: &mut Vec<Reg>) {
    let ns = prog.n_sregs.max(1) as usize;
    let (mut swrites, mut sdef) = (vec![0u32; ns], vec![usize::MAX; ns]);
    for (i, inst) in insts.iter().enumerate() {
        if let Some(d) = sdest(inst) {
            swrites[d as usize] += 1;
            sdef[d as usize] = i;
        }
    }
    // Scalar registers written once (by a pure scalar op), before `at` in the same basic block.
    let sdef_before = |r: SReg, at: usize| -> Option<usize> {
        let i = sdef[r as usize];
        (swrites[r as usize] == 1 && i < at && !uses.block_start[i + 1..=at].iter().any(|&b| b)).then_some(i)
    };
    let var: Vec<bool> = (0..ns).map(|r| sdef[r] != usize::MAX && matches!(insts[sdef[r]], Inst::SMovIfAny { .. })).collect();
    let ssa = |r: SReg| r == SZERO || (swrites[r as usize] <= 1 && !var[r as usize]);
    let table_base = prog.tables.len() as u32;
    let mut single = Vec::new();
    for k in 0..insts.len() {
        let Inst::Select { d, c: vc, t: v, f: ZERO } = insts[k] else { continue };
        if removed[k] {
            continue;
        }
        let Some(ic) = uses.single_use_def(vc, k) else { continue };
        let Inst::Broadcast { s: sc, .. } = insts[ic] else { continue };
        let iv = uses.def_at[v as usize];
        if iv >= k || uses.writes[v as usize] != 1 || uses.reads[v as usize] != 2 || uses.block_start[iv + 1..=k].iter().any(|&b| b) {
            continue;
        }
        let Inst::LdStorage { binding, addr: va, off: off0, .. } = insts[iv] else { continue };
        let ia = uses.def_at[va as usize];
        if removed[iv] || removed[ic] || ia >= iv || uses.writes[va as usize] != 1 {
            continue;
        }
        let Inst::Broadcast { s: si, .. } = insts[ia] else { continue };
        let Some(icmp) = sdef_before(sc, k) else { continue };
        let Inst::SBin { op: BinOp::ULt, a, b: bound, .. } = insts[icmp] else { continue };
        if a != si || !ssa(si) || !ssa(bound) {
            continue;
        }
        let (base, off) = match sdef_before(si, k).map(|i| insts[i]) {
            Some(Inst::SBinImm { op: BinOp::IAdd, a: sb, imm, .. }) if ssa(sb) => (sb, imm.wrapping_add(off0)),
            _ => (si, off0),
        };
        let table = table_base + new_tables.len() as u32;
        new_tables.push(d);
        insts[k] = Inst::LdStorageBelowNS { table, n: 1, binding, addr: base, off, bound };
        removed[iv] = true;
        removed[ic] = true;
        if uses.reads[va as usize] == 1 {
            removed[ia] = true;
        }
        single.push(k);
    }
    // Scalar copies (the loads of warp-uniform variables, `d = v | 0`): readers in the same
    // basic block before `v` changes read `v` itself; the copy goes when none is left.
    for i in 0..insts.len() {
        let Inst::SBinImm { op: BinOp::Or, d, a: v, imm: 0 } = insts[i] else { continue };
        if removed[i] || swrites[d as usize] != 1 || d == v {
            continue;
        }
        let mut k = i + 1;
        while k < insts.len() && !uses.block_start[k] {
            if !removed[k] {
                map_ssources(&mut insts[k], |r| if r == d { v } else { r });
                if sdest(&insts[k]) == Some(v) {
                    break;
                }
            }
            k += 1;
        }
    }
    // Scalar instructions nobody reads any more (the index and compare, copies) go.
    let mut src = Vec::new();
    loop {
        let mut sreads = vec![0u32; ns];
        for (i, inst) in insts.iter().enumerate() {
            if !removed[i] {
                ssources(inst, &mut src);
                src.iter().for_each(|&r| sreads[r as usize] += 1);
            }
        }
        let mut changed = false;
        for (i, inst) in insts.iter().enumerate() {
            if !removed[i] && matches!(inst, Inst::SBin { .. } | Inst::SBinImm { .. }) && sdest(inst).is_some_and(|d| sreads[d as usize] == 0) {
                removed[i] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Runs of them from one base at consecutive offsets merge (only removed instructions, or
    // pure ones that read none of the run's registers, between them).
    const MAX_WORDS: u32 = 8;
    let mut i = 0;
    while i < single.len() {
        let k0 = single[i];
        let Inst::LdStorageBelowNS { table, binding, addr, off, bound, .. } = insts[k0] else { unreachable!("fused above") };
        let mut run = vec![new_tables[(table - table_base) as usize]];
        let mut j = i + 1;
        while j < single.len() && (run.len() as u32) < MAX_WORDS {
            let k = single[j];
            let Inst::LdStorageBelowNS { table: t, binding: b, addr: a, off: o, bound: s, .. } = insts[k] else { unreachable!("fused above") };
            if (b, a, s, o) != (binding, addr, bound, off.wrapping_add(run.len() as u32)) {
                break;
            }
            let between_ok = (single[j - 1] + 1..k).all(|m| {
                removed[m] || {
                    sources(&insts[m], &mut src);
                    !uses.block_start[m] && dest(&insts[m]).is_some() && !src.iter().any(|r| run.contains(r)) && !run.contains(&dest(&insts[m]).expect("checked"))
                }
            }) && !uses.block_start[k];
            if !between_ok {
                break;
            }
            run.push(new_tables[(t - table_base) as usize]);
            j += 1;
        }
        if run.len() > 1 {
            let n = run.len() as u32;
            let table = table_base + new_tables.len() as u32;
            new_tables.extend_from_slice(&run);
            insts[k0] = Inst::LdStorageBelowNS { table, n, binding, addr, off, bound };
            for &k in &single[i + 1..j] {
                removed[k] = true;
            }
        }
        i = j;
    }
}

/// Fuses the unpack patterns in `prog` and drops the instructions they replace.
pub fn fuse(prog: &mut EntryProgram) {
    propagate_copies(prog);
    let mut insts = std::mem::take(&mut prog.insts);
    let uses = Uses::of(prog, &insts);
    let mut removed = vec![false; insts.len()];
    // `(a >> k) & m` → ShrAnd.
    for j in 0..insts.len() {
        let Inst::BinImm { op: BinOp::And, d, a: t, imm: mask } = insts[j] else { continue };
        let Some(i) = uses.single_use_def(t, j) else { continue };
        if let Inst::BinImm { op: BinOp::ShrU, a, imm: shift, .. } = insts[i] {
            if unchanged(&insts, &removed, i, j, &[a]) {
                insts[j] = Inst::ShrAnd { d, a, shift, mask };
                removed[i] = true;
            }
        }
    }
    // f32(bit field) → UnpackF / UnpackFVar.
    for j in 0..insts.len() {
        let Inst::Un { op: UnOp::U2F, d, a: t } = insts[j] else { continue };
        let Some(i) = uses.single_use_def(t, j) else { continue };
        let fused = match insts[i] {
            Inst::ShrAnd { a, shift, mask, .. } if unchanged(&insts, &removed, i, j, &[a]) => Some(Inst::UnpackF { d, a, shift, mask, sub: 0 }),
            Inst::BinImm { op: BinOp::And, a: t1, imm: mask, .. } => match uses.single_use_def(t1, i).map(|h| (h, insts[h])) {
                Some((h, Inst::Bin { op: BinOp::ShrU, a, b: s, .. })) if unchanged(&insts, &removed, h, j, &[a, s]) => {
                    removed[h] = true;
                    Some(Inst::UnpackFVar { d, a, s, mask, sub: 0 })
                }
                _ if unchanged(&insts, &removed, i, j, &[t1]) => Some(Inst::UnpackF { d, a: t1, shift: 0, mask, sub: 0 }),
                _ => None,
            },
            _ => None,
        };
        if let Some(f) = fused {
            insts[j] = f;
            removed[i] = true;
        }
    }
    // f32(i32(a << k) >> r) → SExtF (the shift left may be missing: k = 0).
    for j in 0..insts.len() {
        let Inst::Un { op: UnOp::S2F, d, a: t } = insts[j] else { continue };
        let Some(i) = uses.single_use_def(t, j) else { continue };
        let Inst::BinImm { op: BinOp::ShrS, a: t0, imm: shr, .. } = insts[i] else { continue };
        if removed[i] || shr >= 32 {
            continue;
        }
        let (a, shl) = match uses.single_use_def(t0, i).map(|h| (h, insts[h])) {
            Some((h, Inst::BinImm { op: BinOp::Shl, a, imm, .. })) if imm < 32 && !removed[h] && unchanged(&insts, &removed, h, j, &[a]) => {
                removed[h] = true;
                (a, imm)
            }
            _ if unchanged(&insts, &removed, i, j, &[t0]) => (t0, 0),
            _ => continue,
        };
        insts[j] = Inst::SExtF { d, a, shl, shr };
        removed[i] = true;
    }
    // ... - c folds into the unpack.
    for k in 0..insts.len() {
        let Inst::BinImm { op: BinOp::FSub, d, a: t, imm } = insts[k] else { continue };
        let Some(j) = uses.single_use_def(t, k) else { continue };
        match insts[j] {
            Inst::UnpackF { a, shift, mask, sub: 0, .. } if unchanged(&insts, &removed, j, k, &[a]) => {
                insts[k] = Inst::UnpackF { d, a, shift, mask, sub: imm };
                removed[j] = true;
            }
            Inst::UnpackFVar { a, s, mask, sub: 0, .. } if unchanged(&insts, &removed, j, k, &[a, s]) => {
                insts[k] = Inst::UnpackFVar { d, a, s, mask, sub: imm };
                removed[j] = true;
            }
            _ => {}
        }
    }
    // Guarded reads: `i = a + k; c = i < bound; v = storage[i]; d = c ? v : 0` → LdStorageBelow.
    for k in 0..insts.len() {
        let Inst::Select { d, c, t: v, f: ZERO } = insts[k] else { continue };
        let Some(ic) = uses.single_use_def(c, k) else { continue };
        let Inst::BinVS { op: BinOp::ULt, a: i_reg, s: bound, .. } = insts[ic] else { continue };
        // The load also reads its destination (inactive lanes keep it): one write, two reads.
        let iv = uses.def_at[v as usize];
        if iv >= k || uses.writes[v as usize] != 1 || uses.reads[v as usize] != 2 || uses.block_start[iv + 1..=k].iter().any(|&b| b) {
            continue;
        }
        let Inst::LdStorage { binding, addr, off: 0, .. } = insts[iv] else { continue };
        if addr != i_reg || removed[iv] || removed[ic] {
            continue;
        }
        let first = ic.min(iv);
        if !pure_between(&insts, &removed, first, k, bound) || !unchanged(&insts, &removed, first, k, &[addr]) {
            continue;
        }
        let mut fused = Inst::LdStorageBelow { d, binding, addr, off: 0, bound };
        // The address `a + k`, read only by the compare and the load, folds in too.
        let ia = uses.def_at[addr as usize];
        if ia < first && uses.writes[addr as usize] == 1 && uses.reads[addr as usize] == 2 && !uses.block_start[ia + 1..=k].iter().any(|&b| b) {
            if let Inst::BinImm { op: BinOp::IAdd, a, imm, .. } = insts[ia] {
                if !removed[ia] && unchanged(&insts, &removed, ia, k, &[a]) {
                    fused = Inst::LdStorageBelow { d, binding, addr: a, off: imm, bound };
                    removed[ia] = true;
                }
            }
        }
        insts[k] = fused;
        removed[ic] = true;
        removed[iv] = true;
    }
    // m * unpack → UnpackFMul / UnpackFVarMul (f32 multiplication commutes exactly).
    for k in 0..insts.len() {
        let Inst::Bin { op: BinOp::FMul, d, a: x, b: y } = insts[k] else { continue };
        for (t, m) in [(y, x), (x, y)] {
            let Some(j) = uses.single_use_def(t, k) else { continue };
            if removed[j] {
                continue;
            }
            let fused = match insts[j] {
                Inst::UnpackF { a, shift, mask, sub, .. } if unchanged(&insts, &removed, j, k, &[a]) => Inst::UnpackFMul { d, a, shift, mask, sub, m },
                Inst::UnpackFVar { a, s, mask, sub, .. } if unchanged(&insts, &removed, j, k, &[a, s]) => Inst::UnpackFVarMul { d, a, s, mask, sub, m },
                _ => continue,
            };
            insts[k] = fused;
            removed[j] = true;
            break;
        }
    }
    // A field shifted by a scalar amount: `t1 = (a >> k) & m1` (optional), `t2 = t1 >> s`
    // (s scalar), `t3 = (f32(t2 & m) - sub) * scale` → UnpackFSMulAdd, then `t3 + c` folds in.
    for k in 0..insts.len() {
        let Inst::UnpackFMul { d, a: t2, shift: 0, mask, sub, m } = insts[k] else { continue };
        let Some(j) = uses.single_use_def(t2, k) else { continue };
        let Inst::BinVS { op: BinOp::ShrU, a: t1, s, .. } = insts[j] else { continue };
        if removed[j] || !unchanged(&insts, &removed, j, k, &[t1]) || !pure_between(&insts, &removed, j, k, s) {
            continue;
        }
        let (a, shift, mask1) = match uses.single_use_def(t1, j).map(|i| (i, insts[i])) {
            Some((i, Inst::ShrAnd { a, shift, mask, .. })) if !removed[i] && unchanged(&insts, &removed, i, k, &[a]) => {
                removed[i] = true;
                (a, shift, mask)
            }
            Some((i, Inst::BinImm { op: BinOp::And, a, imm: mask, .. })) if !removed[i] && unchanged(&insts, &removed, i, k, &[a]) => {
                removed[i] = true;
                (a, 0, mask)
            }
            _ => (t1, 0, u32::MAX),
        };
        insts[k] = Inst::UnpackFSMulAdd { d, a, s, shift, mask1, mask, sub, m, c: NO_REG };
        removed[j] = true;
    }
    for k in 0..insts.len() {
        let Inst::Bin { op: BinOp::FAdd, d, a: x, b: y } = insts[k] else { continue };
        for (t, other) in [(x, y), (y, x)] {
            let Some(j) = uses.single_use_def(t, k) else { continue };
            let Inst::UnpackFSMulAdd { a, s, shift, mask1, mask, sub, m, c: NO_REG, .. } = insts[j] else { continue };
            if removed[j] || other == t || !unchanged(&insts, &removed, j, k, &[a, m]) || !pure_between(&insts, &removed, j, k, s) {
                continue;
            }
            insts[k] = Inst::UnpackFSMulAdd { d, a, s, shift, mask1, mask, sub, m, c: other };
            removed[j] = true;
            break;
        }
    }
    // x + a * b → MulAdd (f32 addition commutes exactly, so either operand may be the product).
    for k in 0..insts.len() {
        let Inst::Bin { op: BinOp::FAdd, d, a: x, b: y } = insts[k] else { continue };
        for (t, other) in [(y, x), (x, y)] {
            let Some(j) = uses.single_use_def(t, k) else { continue };
            if removed[j] {
                continue;
            }
            let Inst::Bin { op: BinOp::FMul, a, b, .. } = insts[j] else { continue };
            if unchanged(&insts, &removed, j, k, &[a, b]) {
                insts[k] = Inst::MulAdd { d, a, b, c: other };
                removed[j] = true;
                break;
            }
        }
    }
    // The dequantized weight times an activation: UnpackFSMulAdd (single use) into the
    // multiply-add (or the first product) of a dot product → UnpackFSDot.
    for k in 0..insts.len() {
        let (d, p, q, acc) = match insts[k] {
            Inst::MulAdd { d, a, b, c } => (d, a, b, c),
            Inst::Bin { op: BinOp::FMul, d, a, b } => (d, a, b, NO_REG),
            _ => continue,
        };
        if removed[k] {
            continue;
        }
        for (t, x) in [(p, q), (q, p)] {
            let Some(j) = uses.single_use_def(t, k) else { continue };
            if let Inst::SExtF { a, shl, shr, .. } = insts[j] {
                if !removed[j] && x != t && unchanged(&insts, &removed, j, k, &[a]) {
                    insts[k] = Inst::SExtDot { d, a, shl, shr, x, acc };
                    removed[j] = true;
                    break;
                }
                continue;
            }
            let Inst::UnpackFSMulAdd { a, s, shift, mask1, mask, sub: 0, m, c, .. } = insts[j] else { continue };
            if removed[j] || c == NO_REG || x == t || !unchanged(&insts, &removed, j, k, &[a, m, c]) || !pure_between(&insts, &removed, j, k, s) {
                continue;
            }
            insts[k] = Inst::UnpackFSDot { d, a, s, shift, mask1, mask, m, c, x, acc };
            removed[j] = true;
            break;
        }
    }
    // A load's address `a + k` (single use) folds into its offset: the wrapping sums agree.
    for k in 0..insts.len() {
        let (Inst::LdStorage { addr, .. } | Inst::LdStorageBelow { addr, .. }) = insts[k] else { continue };
        let Some(ia) = uses.single_use_def(addr, k) else { continue };
        let Inst::BinImm { op: BinOp::IAdd, a, imm, .. } = insts[ia] else { continue };
        if removed[k] || removed[ia] || !unchanged(&insts, &removed, ia, k, &[a]) {
            continue;
        }
        if let Inst::LdStorage { addr, off, .. } | Inst::LdStorageBelow { addr, off, .. } = &mut insts[k] {
            *addr = a;
            *off = off.wrapping_add(imm);
        }
        removed[ia] = true;
    }
    // The same guarded reads at a warp-uniform address (a loop counter in a scalar register):
    // `si = sb + k; sc = si < bound; v = storage[broadcast(si)]; d = broadcast(sc) ? v : 0`
    // → LdStorageBelowNS (one word for the warp), then runs of them merged.
    let mut new_tables: Vec<Reg> = Vec::new();
    fuse_uniform_reads(prog, &mut insts, &uses, &mut removed, &mut new_tables);
    // Loads from one address register at consecutive offsets → LdStorageN / LdStorageBelowN,
    // at the first load's place. The later loads move up over pure instructions only (no
    // store, atomic, barrier or mask change), none of which writes the address or the bound
    // or reads a moved load's destination; each destination is written only by its load.
    // (Runs last: `dest`/`sources` do not know the multi-destination loads.)
    const MAX_WORDS: usize = 8;
    let mut src = Vec::new();
    for i0 in 0..insts.len() {
        let (binding, addr, off, bound) = match insts[i0] {
            Inst::LdStorage { binding, addr, off, .. } => (binding, addr, off, None),
            Inst::LdStorageBelow { binding, addr, off, bound, .. } => (binding, addr, off, Some(bound)),
            _ => continue,
        };
        let first = dest(&insts[i0]).expect("a load has a destination");
        if removed[i0] || first == addr {
            continue;
        }
        let mut group = vec![(i0, first)];
        let mut k = i0 + 1;
        while k < insts.len() && !uses.block_start[k] && group.len() < MAX_WORDS {
            if removed[k] {
                k += 1;
                continue;
            }
            let next = off.wrapping_add(group.len() as u32);
            let matching = match insts[k] {
                Inst::LdStorage { binding: b, addr: a, off: o, .. } => bound.is_none() && (b, a, o) == (binding, addr, next),
                Inst::LdStorageBelow { binding: b, addr: a, off: o, bound: s, .. } => bound == Some(s) && (b, a, o) == (binding, addr, next),
                _ => false,
            };
            if matching {
                let d = dest(&insts[k]).expect("a load has a destination");
                let clean = uses.writes[d as usize] == 1
                    && d != addr
                    && !group.iter().any(|&(_, g)| g == d)
                    && (i0 + 1..k).all(|m| {
                        removed[m] || {
                            sources(&insts[m], &mut src);
                            !src.contains(&d)
                        }
                    });
                if !clean {
                    break;
                }
                group.push((k, d));
            } else {
                let pure = match insts[k] {
                    Inst::Atomic { .. } => false,
                    ref x if dest(x).is_some() => dest(x) != Some(addr),
                    ref x => sdest(x).is_some_and(|s| Some(s) != bound),
                };
                if !pure {
                    break;
                }
            }
            k += 1;
        }
        if group.len() < 2 {
            continue;
        }
        let table = (prog.tables.len() + new_tables.len()) as u32;
        new_tables.extend(group.iter().map(|&(_, d)| d));
        let n = group.len() as u32;
        insts[i0] = match bound {
            None => Inst::LdStorageN { table, n, binding, addr, off },
            Some(bound) => Inst::LdStorageBelowN { table, n, binding, addr, off, bound },
        };
        for &(k, _) in &group[1..] {
            removed[k] = true;
        }
    }
    // Unguarded loads at a broadcast scalar address → LdStorageBelowNS without a bound (one
    // read per word for the warp instead of one per lane).
    let (mut swrites, mut bdef) = (vec![0u32; prog.n_sregs.max(1) as usize], vec![None; prog.n_regs as usize]);
    for (i, inst) in insts.iter().enumerate() {
        if let Some(d) = sdest(inst) {
            swrites[d as usize] += 1 + matches!(inst, Inst::SMovIfAny { .. }) as u32;
        }
        if let Inst::Broadcast { d, s } = *inst {
            if uses.writes[d as usize] == 1 && !removed[i] {
                bdef[d as usize] = Some((i, s));
            }
        }
    }
    for k in 0..insts.len() {
        if removed[k] {
            continue;
        }
        let (table, n, binding, va, off) = match insts[k] {
            Inst::LdStorageN { table, n, binding, addr, off } => (table, n, binding, addr, off),
            Inst::LdStorage { d, binding, addr, off } if uses.writes[d as usize] == 1 && d != addr => {
                let t = (prog.tables.len() + new_tables.len()) as u32;
                (t, 1, binding, addr, off)
            }
            _ => continue,
        };
        let Some((ib, s)) = bdef[va as usize] else { continue };
        if ib >= k || swrites[s as usize] > 1 || uses.block_start[ib + 1..=k].iter().any(|&b| b) {
            continue;
        }
        if let Inst::LdStorage { d, .. } = insts[k] {
            new_tables.push(d);
        }
        insts[k] = Inst::LdStorageBelowNS { table, n, binding, addr: s, off, bound: NO_REG };
    }
    // Chains of four dot-product steps on one word, their activations read in place.
    fuse_dot4(prog, &mut insts, &uses, &mut removed, &new_tables);
    // `acc += x + y` into a variable: the adds and the masked store → AddMasked.
    fuse_masked_adds(prog, &mut insts, &uses, &mut removed, &new_tables);
    // Broadcasts nobody reads any more go.
    let mut vreads = vec![0u32; prog.n_regs as usize];
    for (i, inst) in insts.iter().enumerate() {
        if removed[i] {
            continue;
        }
        match *inst {
            Inst::LdStorageN { addr, .. } | Inst::LdStorageBelowN { addr, .. } => vreads[addr as usize] += 1,
            _ => {
                sources(inst, &mut src);
                src.iter().for_each(|&r| vreads[r as usize] += 1);
            }
        }
    }
    for (i, inst) in insts.iter().enumerate() {
        if let Inst::Broadcast { d, .. } = *inst {
            if vreads[d as usize] == 0 && !prog.tables.contains(&d) && !new_tables.contains(&d) {
                removed[i] = true;
            }
        }
    }
    prog.tables.extend(new_tables);
    // Drop the fused-away instructions; jumps move to the next kept instruction.
    prog.insts = compact(insts, &removed);
    hoist_invariants(prog);
}

/// One dot-product step: `UnpackFSDot` or `SExtDot`, its fields apart from `d`, `x` and `acc`
/// (which must agree along a chain) and its shift.
#[derive(PartialEq)]
enum DotStep {
    Unpack { a: Reg, s: SReg, mask1: u32, mask: u32, m: Reg, c: Reg },
    SExt { a: Reg, shr: u32 },
}

fn dot_step(inst: &Inst) -> Option<(DotStep, u32, Reg, Reg, Reg)> {
    match *inst {
        Inst::UnpackFSDot { d, a, s, shift, mask1, mask, m, c, x, acc } => Some((DotStep::Unpack { a, s, mask1, mask, m, c }, shift & 31, d, x, acc)),
        Inst::SExtDot { d, a, shl, shr, x, acc } if shl < 32 => Some((DotStep::SExt { a, shr }, shl, d, x, acc)),
        _ => None,
    }
}

/// Registers `at .. at + n` of the tables (`prog.tables`, then the peephole's new ones).
fn table_regs(prog: &EntryProgram, new_tables: &[Reg], at: u32, n: u32) -> Vec<Reg> {
    (at..at + n).map(|i| if (i as usize) < prog.tables.len() { prog.tables[i as usize] } else { new_tables[i as usize - prog.tables.len()] }).collect()
}

/// Reads and writes of every vector register by the kept instructions (preloaded registers and
/// those of dynamically indexed tables count twice, so they never look single-use), and for the
/// words of each `LdStorageBelowNS`, the instruction and the word's position.
#[allow(clippy::type_complexity)]
fn counts(prog: &EntryProgram, insts: &[Inst], removed: &[bool], new_tables: &[Reg]) -> (Vec<u32>, Vec<u32>, Vec<Option<(usize, u32)>>) {
    let nr = prog.n_regs as usize;
    let table = |at: u32, n: u32| table_regs(prog, new_tables, at, n);
    let (mut reads, mut writes) = (vec![0u32; nr], vec![0u32; nr]);
    let mut xdef: Vec<Option<(usize, u32)>> = vec![None; nr];
    // Preloaded registers and those of dynamically indexed tables never qualify.
    for &(_, r) in &prog.builtins {
        writes[r as usize] += 2;
    }
    for &r in &prog.tables {
        (reads[r as usize], writes[r as usize]) = (reads[r as usize] + 2, writes[r as usize] + 2);
    }
    let mut src = Vec::new();
    for (i, inst) in insts.iter().enumerate() {
        if removed[i] {
            continue;
        }
        match *inst {
            Inst::LdStorageN { table: at, n, addr, .. } | Inst::LdStorageBelowN { table: at, n, addr, .. } => {
                reads[addr as usize] += 1;
                table(at, n).into_iter().for_each(|r| writes[r as usize] += 1);
            }
            Inst::LdStorageBelowNS { table: at, n, .. } => {
                for (j, r) in table(at, n).into_iter().enumerate() {
                    writes[r as usize] += 1;
                    xdef[r as usize] = Some((i, j as u32));
                }
            }
            _ => {
                sources(inst, &mut src);
                src.iter().for_each(|&r| reads[r as usize] += 1);
                if let Some(d) = dest(inst) {
                    writes[d as usize] += 1;
                }
            }
        }
    }
    (reads, writes, xdef)
}

/// Four `UnpackFSDot`s (or `SExtDot`s) in a row on one word, each result read only as the next
/// one's accumulator, whose activations are four consecutive words of one `LdStorageBelowNS`
/// (each written only there, in the same basic block, with no store and no write of its scalar
/// address or bound in between, so a read at the dot gives the same words) → `UnpackFSDot4` /
/// `SExtDot4` at the last one's place. A `LdStorageBelowNS` none of whose words is read any
/// more goes.
fn fuse_dot4(prog: &EntryProgram, insts: &mut [Inst], uses: &Uses, removed: &mut [bool], new_tables: &[Reg]) {
    let table = |at: u32, n: u32| table_regs(prog, new_tables, at, n);
    let (mut reads, writes, xdef) = counts(prog, insts, removed, new_tables);
    let mut k = 0;
    while k < insts.len() {
        // Four kept instructions from k on, with no block boundary among them.
        let mut at = Vec::with_capacity(4);
        let mut i = k;
        while at.len() < 4 && i < insts.len() {
            if i > k && uses.block_start[i] {
                break;
            }
            if !removed[i] {
                at.push(i);
            }
            i += 1;
        }
        let fused = (|| {
            if at.len() < 4 {
                return None;
            }
            let steps: Vec<_> = at.iter().map(|&i| dot_step(&insts[i])).collect::<Option<_>>()?;
            let (ref kind, _, _, _, acc0) = steps[0];
            for t in 1..4 {
                let prev = steps[t - 1].2;
                let inputs: &[Reg] = match *kind {
                    DotStep::Unpack { a, m, c, .. } => &[a, m, c],
                    DotStep::SExt { a, .. } => &[a],
                };
                if steps[t].0 != *kind || steps[t].4 != prev || reads[prev as usize] != 1 || writes[prev as usize] != 1 || inputs.contains(&prev) || prev == acc0 {
                    return None;
                }
            }
            // The activations: words p .. p + 4 of one uniform read.
            let (kx, p) = xdef[steps[0].3 as usize]?;
            for (t, st) in steps.iter().enumerate() {
                if xdef[st.3 as usize] != Some((kx, p + t as u32)) || writes[st.3 as usize] != 1 {
                    return None;
                }
            }
            let Inst::LdStorageBelowNS { binding, addr, off, bound, .. } = insts[kx] else { return None };
            if kx >= at[0] || uses.block_start[kx + 1..=at[3]].iter().any(|&b| b) {
                return None;
            }
            let quiet = (kx + 1..at[3]).all(|m| {
                removed[m]
                    || match insts[m] {
                        Inst::StStorage { .. } | Inst::StShared { .. } | Inst::Atomic { .. } | Inst::Barrier => false,
                        ref x => sdest(x).is_none_or(|s| s != addr && s != bound),
                    }
            });
            if !quiet {
                return None;
            }
            let shifts = steps.iter().enumerate().fold(0u32, |acc, (t, st)| acc | st.1 << (8 * t));
            let (d, xoff) = (steps[3].2, off.wrapping_add(p));
            Some(match *kind {
                DotStep::Unpack { a, s, mask1, mask, m, c } => Inst::UnpackFSDot4 { d, a, s, shifts, mask1, mask, m, c, acc: acc0, xbinding: binding, xaddr: addr, xoff, xbound: bound },
                DotStep::SExt { a, shr } => Inst::SExtDot4 { d, a, shls: shifts, shr, acc: acc0, xbinding: binding, xaddr: addr, xoff, xbound: bound },
            })
        })();
        match fused {
            Some(inst) => {
                for &i in &at {
                    if let Some((_, _, _, x, _)) = dot_step(&insts[i]) {
                        reads[x as usize] -= 1;
                    }
                }
                for &i in &at[..3] {
                    removed[i] = true;
                }
                insts[at[3]] = inst;
                k = at[3] + 1;
            }
            None => k += 1,
        }
    }
    for i in 0..insts.len() {
        if let Inst::LdStorageBelowNS { table: at, n, .. } = insts[i] {
            if !removed[i] && table(at, n).iter().all(|&r| reads[r as usize] == 0 && !prog.tables.contains(&r)) {
                removed[i] = true;
            }
        }
    }
}

/// `t = x + y` (optional), `v = a + t` (either order), `MovMasked { d, s: v }`, each the
/// previous kept instruction of the next in one basic block and each temporary read once
/// → `AddMasked { d, a, x, y }` (f32 addition commutes exactly).
fn fuse_masked_adds(prog: &EntryProgram, insts: &mut [Inst], uses: &Uses, removed: &mut [bool], new_tables: &[Reg]) {
    let (reads, writes, _) = counts(prog, insts, removed, new_tables);
    let single = |r: Reg| reads[r as usize] == 1 && writes[r as usize] == 1;
    // The kept instruction before `k` in its basic block.
    let prev = |removed: &[bool], k: usize| -> Option<usize> {
        let mut i = k;
        while i > 0 && !uses.block_start[i] {
            i -= 1;
            if !removed[i] {
                return Some(i);
            }
        }
        None
    };
    for k in 0..insts.len() {
        let Inst::MovMasked { d, s: v } = insts[k] else { continue };
        if removed[k] || !single(v) {
            continue;
        }
        let Some(j) = prev(removed, k) else { continue };
        let Inst::Bin { op: BinOp::FAdd, d: vd, a: p, b: q } = insts[j] else { continue };
        if vd != v {
            continue;
        }
        let mut fused = Inst::AddMasked { d, a: p, b: q, c: NO_REG };
        if let Some(i) = prev(removed, j) {
            if let Inst::Bin { op: BinOp::FAdd, d: t, a: x, b: y } = insts[i] {
                if single(t) && (t == p) != (t == q) {
                    let a = if t == p { q } else { p };
                    fused = Inst::AddMasked { d, a, b: x, c: y };
                    removed[i] = true;
                }
            }
        }
        insts[k] = fused;
        removed[j] = true;
    }
}

/// Loop-invariant code motion of scalar instructions: a pure scalar op inside a loop (from a
/// jump target `t` to the jump back to it) whose operands are written only before the loop (or
/// by ops already hoisted) moves in front of the loop, so it runs once instead of per
/// iteration (the params loads and the index arithmetic on them). Pure scalar ops have no
/// effect besides their register (uniform reads out of range give 0, division by 0 is defined),
/// so running them once more or once less is harmless.
fn hoist_invariants(prog: &mut EntryProgram) {
    for _ in 0..64 {
        let insts = &prog.insts;
        let ns = prog.n_sregs.max(1) as usize;
        let mut swrites = vec![0u32; ns];
        let mut sdef = vec![usize::MAX; ns];
        for (i, inst) in insts.iter().enumerate() {
            if let Some(d) = sdest(inst) {
                swrites[d as usize] += 1;
                sdef[d as usize] = i;
            }
        }
        let mut src = Vec::new();
        let mut changed = None;
        for b in 0..insts.len() {
            let Some(t) = jump_target(&insts[b]).map(|t| t as usize).filter(|&t| t <= b) else { continue };
            // Only loops entered at their top: no jump from outside lands inside.
            let entered_inside = insts.iter().enumerate().any(|(j, x)| {
                (j < t || j > b) && jump_target(x).is_some_and(|to| (to as usize) > t && (to as usize) <= b)
            });
            if entered_inside {
                continue;
            }
            let mut hoisted: Vec<usize> = Vec::new();
            for k in t..=b {
                let pure = matches!(insts[k], Inst::SMovi { .. } | Inst::SBin { .. } | Inst::SBinImm { .. } | Inst::SUn { .. } | Inst::SSelect { .. } | Inst::SLdUniform { .. });
                let Some(d) = sdest(&insts[k]) else { continue };
                if !pure || swrites[d as usize] != 1 {
                    continue;
                }
                ssources(&insts[k], &mut src);
                let invariant = src.iter().all(|&r| {
                    let def = sdef[r as usize];
                    let outside = def == usize::MAX || def < t || hoisted.contains(&def);
                    outside && !(t..=b).any(|m| !hoisted.contains(&m) && sdest(&insts[m]) == Some(r))
                });
                if invariant {
                    hoisted.push(k);
                }
            }
            if !hoisted.is_empty() {
                changed = Some((t, b, hoisted));
                break;
            }
        }
        let Some((t, b, hoisted)) = changed else { return };
        // New order: [..t), hoisted, the rest. Jumps from inside the loop to its top go to the
        // top's first kept instruction; from outside, to the hoisted ones.
        let n = prog.insts.len();
        let mut order: Vec<usize> = (0..t).collect();
        order.extend(hoisted.iter().copied());
        order.extend((t..n).filter(|k| !hoisted.contains(k)));
        let mut new_index = vec![0u32; n + 1];
        for (at, &old) in order.iter().enumerate() {
            new_index[old] = at as u32;
        }
        new_index[n] = n as u32;
        let kept_from = |x: usize| (x..=n).find(|k| !hoisted.contains(k)).expect("a jump is never hoisted");
        let mut out = Vec::with_capacity(n);
        for &old in &order {
            let mut inst = prog.insts[old];
            let inside = old >= t && old <= b;
            if let Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::Jump { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } = &mut inst {
                let target = *to as usize;
                *to = if target == t && !inside { t as u32 } else { new_index[kept_from(target)] };
            }
            out.push(inst);
        }
        prog.insts = out;
    }
}
