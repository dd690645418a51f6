//! Register allocation over the finished bytecode: the compiler gives every value a fresh vector
//! register (the Q4_0 mat-vec used 180, 46 KB of register file per warp, more than an L1 data
//! cache); this pass lets values whose live ranges do not overlap share one.
//!
//! Which registers take part (*temporaries*): those written by exactly one instruction, not
//! preloaded with a built-in, not register 0, not in a `Gather`/`ScatterMasked` table and not
//! the destination of a `MovMasked` (function variables and arrays keep their own register, as
//! do registers read on some path before they are written). Everything else is *pinned*: it keeps
//! a register of its own that no temporary shares, so its behaviour cannot change. Registers that
//! nothing names any more (values the peephole fused away) are dropped.
//!
//! Liveness is the usual backward data flow over the instruction graph (fall-through and jump
//! targets): the warp's pc walks a path of that graph whatever its exec mask, and registers are
//! plain 64-lane words, so the analysis holds for the lanes as for a scalar machine. An
//! instruction that writes only the active lanes (loads, atomics) still ends the previous value of
//! a temporary: a temporary is read only in lanes that were active when it was written (a naga
//! expression is used only inside the block that evaluates it), so whatever its other lanes held
//! is never read. A destination never shares a register with a source of its own instruction
//! (the interpreter's in-place fast paths want them distinct), nor with the other destinations
//! of a multi-word load.
//!
//! Colouring is greedy in the order of the definitions. The pass changes register numbers only,
//! so results are bit-identical.

use crate::isa::*;

/// Vector registers an instruction reads (`uses`) and writes (`defs`). A write that keeps the
/// inactive lanes of a variable (`MovMasked`, `ScatterMasked`) also reads it.
struct Access {
    uses: Vec<Reg>,
    defs: Vec<Reg>,
}

fn access(inst: &Inst, tables: &[Reg], out: &mut Access) {
    out.uses.clear();
    out.defs.clear();
    let table = |at: u32, len: u32| &tables[at as usize..][..len as usize];
    let (u, d) = (&mut out.uses, &mut out.defs);
    match *inst {
        Inst::Movi { d: x, .. } | Inst::ArrayLength { d: x, .. } => d.push(x),
        Inst::Mov { d: x, s } | Inst::Un { d: x, a: s, .. } | Inst::BinImm { d: x, a: s, .. } => (d.push(x), u.push(s)).0,
        Inst::MovMasked { d: x, s } => (d.push(x), u.extend([x, s])).0,
        Inst::AddMasked { d: x, a, b, c } => {
            d.push(x);
            u.extend([x, a, b]);
            if c != NO_REG {
                u.push(c);
            }
        }
        Inst::ShrAnd { d: x, a, .. } | Inst::UnpackF { d: x, a, .. } | Inst::BinVS { d: x, a, .. } | Inst::SExtF { d: x, a, .. } => (d.push(x), u.push(a)).0,
        Inst::Bin { d: x, a, b, .. } | Inst::UnpackFVar { d: x, a, s: b, .. } | Inst::UnpackFMul { d: x, a, m: b, .. } => (d.push(x), u.extend([a, b])).0,
        Inst::Fma { d: x, a, b, c } | Inst::MulAdd { d: x, a, b, c } | Inst::UnpackFVarMul { d: x, a, s: b, m: c, .. } => (d.push(x), u.extend([a, b, c])).0,
        Inst::Select { d: x, c, t, f } => (d.push(x), u.extend([c, t, f])).0,
        Inst::UnpackFSMulAdd { d: x, a, m, c, .. } => {
            d.push(x);
            u.extend([a, m]);
            if c != NO_REG {
                u.push(c);
            }
        }
        Inst::UnpackFSDot { d: dd, a, m, c, x, acc, .. } => {
            d.push(dd);
            u.extend([a, m, c, x]);
            if acc != NO_REG {
                u.push(acc);
            }
        }
        Inst::SExtDot { d: dd, a, x, acc, .. } => {
            d.push(dd);
            u.extend([a, x]);
            if acc != NO_REG {
                u.push(acc);
            }
        }
        Inst::UnpackFSDot4 { d: dd, a, m, c, acc, .. } => {
            d.push(dd);
            u.extend([a, m, c]);
            if acc != NO_REG {
                u.push(acc);
            }
        }
        Inst::SExtDot4 { d: dd, a, acc, .. } => {
            d.push(dd);
            u.push(a);
            if acc != NO_REG {
                u.push(acc);
            }
        }
        Inst::ExtractBits { d: x, e, off, cnt, .. } => (d.push(x), u.extend([e, off, cnt])).0,
        Inst::InsertBits { d: x, e, n, off, cnt } => (d.push(x), u.extend([e, n, off, cnt])).0,
        Inst::Gather { d: x, table: at, len, idx, .. } => {
            d.push(x);
            u.push(idx);
            u.extend_from_slice(table(at, len));
        }
        Inst::ScatterMasked { table: at, len, idx, s, .. } => {
            // One register of the table per lane, the others kept: all read and written.
            d.extend_from_slice(table(at, len));
            u.extend_from_slice(table(at, len));
            u.extend([idx, s]);
        }
        Inst::Broadcast { d: x, .. } => d.push(x),
        Inst::LdStorage { d: x, addr, .. } | Inst::LdStorageBelow { d: x, addr, .. } | Inst::LdUniform { d: x, addr, .. } | Inst::LdShared { d: x, addr, .. } => {
            (d.push(x), u.push(addr)).0
        }
        Inst::LdStorageN { table: at, n, addr, .. } | Inst::LdStorageBelowN { table: at, n, addr, .. } => {
            d.extend_from_slice(table(at, n));
            u.push(addr);
        }
        Inst::LdStorageBelowNS { table: at, n, .. } => d.extend_from_slice(table(at, n)),
        Inst::StStorage { s, addr, .. } | Inst::StShared { s, addr, .. } => u.extend([s, addr]),
        Inst::Atomic { d: x, addr, v, cmp, .. } => (d.push(x), u.extend([addr, v, cmp])).0,
        Inst::AndCond { c } | Inst::ElseOf { c, .. } | Inst::BreakIf { c, .. } | Inst::BreakUnless { c, .. } => u.push(c),
        Inst::CoopLoad { d: at, addr, stride, .. } => {
            d.extend_from_slice(table(at, COOP_REGS));
            u.extend([addr, stride]);
        }
        Inst::CoopStore { s, addr, stride, .. } => {
            u.extend_from_slice(table(s, COOP_REGS));
            u.extend([addr, stride]);
        }
        Inst::CoopMulAdd { d: at, a, b, c, .. } => {
            d.extend_from_slice(table(at, COOP_REGS));
            for t in [a, b, c] {
                u.extend_from_slice(table(t, COOP_REGS));
            }
        }
        Inst::SMovi { .. }
        | Inst::SBin { .. }
        | Inst::SBinImm { .. }
        | Inst::SUn { .. }
        | Inst::SSelect { .. }
        | Inst::SMovIfAny { .. }
        | Inst::SLdUniform { .. }
        | Inst::SaveExec { .. }
        | Inst::Join { .. }
        | Inst::ClearMask { .. }
        | Inst::Leave { .. }
        | Inst::Rejoin { .. }
        | Inst::ExecFrom { .. }
        | Inst::JumpIfZeroS { .. }
        | Inst::JumpIfNonZeroS { .. }
        | Inst::JumpIfNone { .. }
        | Inst::JumpIfAny { .. }
        | Inst::Jump { .. }
        | Inst::Barrier
        | Inst::Halt => {}
    }
}

/// Renames every vector register of `inst` (not its table entries: the tables are renamed once).
fn rename(inst: &mut Inst, f: &impl Fn(Reg) -> Reg) {
    let g = |r: &mut Reg| *r = f(*r);
    match inst {
        Inst::Movi { d, .. } | Inst::ArrayLength { d, .. } | Inst::Broadcast { d, .. } => g(d),
        Inst::Mov { d, s } | Inst::MovMasked { d, s } | Inst::Un { d, a: s, .. } | Inst::BinImm { d, a: s, .. } => (g(d), g(s)).1,
        Inst::ShrAnd { d, a, .. } | Inst::UnpackF { d, a, .. } | Inst::BinVS { d, a, .. } | Inst::SExtF { d, a, .. } => (g(d), g(a)).1,
        Inst::Bin { d, a, b, .. } | Inst::UnpackFVar { d, a, s: b, .. } | Inst::UnpackFMul { d, a, m: b, .. } => (g(d), g(a), g(b)).2,
        Inst::AddMasked { d, a, b, c } => {
            (g(d), g(a), g(b));
            if *c != NO_REG {
                g(c);
            }
        }
        Inst::Fma { d, a, b, c } | Inst::MulAdd { d, a, b, c } | Inst::UnpackFVarMul { d, a, s: b, m: c, .. } => (g(d), g(a), g(b), g(c)).3,
        Inst::Select { d, c, t, f } => (g(d), g(c), g(t), g(f)).3,
        Inst::UnpackFSMulAdd { d, a, m, c, .. } => {
            (g(d), g(a), g(m));
            if *c != NO_REG {
                g(c);
            }
        }
        Inst::UnpackFSDot { d, a, m, c, x, acc, .. } => {
            (g(d), g(a), g(m), g(c), g(x));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::SExtDot { d, a, x, acc, .. } => {
            (g(d), g(a), g(x));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::UnpackFSDot4 { d, a, m, c, acc, .. } => {
            (g(d), g(a), g(m), g(c));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::SExtDot4 { d, a, acc, .. } => {
            (g(d), g(a));
            if *acc != NO_REG {
                g(acc);
            }
        }
        Inst::ExtractBits { d, e, off, cnt, .. } => (g(d), g(e), g(off), g(cnt)).3,
        Inst::InsertBits { d, e, n, off, cnt } => (g(d), g(e), g(n), g(off), g(cnt)).4,
        Inst::Gather { d, idx, .. } => (g(d), g(idx)).1,
        Inst::ScatterMasked { idx, s, .. } => (g(idx), g(s)).1,
        Inst::LdStorage { d, addr, .. } | Inst::LdStorageBelow { d, addr, .. } | Inst::LdUniform { d, addr, .. } | Inst::LdShared { d, addr, .. } => (g(d), g(addr)).1,
        Inst::LdStorageN { addr, .. } | Inst::LdStorageBelowN { addr, .. } => g(addr),
        Inst::StStorage { s, addr, .. } | Inst::StShared { s, addr, .. } => (g(s), g(addr)).1,
        Inst::Atomic { d, addr, v, cmp, .. } => (g(d), g(addr), g(v), g(cmp)).3,
        Inst::AndCond { c } | Inst::ElseOf { c, .. } | Inst::BreakIf { c, .. } | Inst::BreakUnless { c, .. } => g(c),
        Inst::CoopLoad { addr, stride, .. } | Inst::CoopStore { addr, stride, .. } => (g(addr), g(stride)).1,
        Inst::CoopMulAdd { .. }
        | Inst::SMovi { .. }
        | Inst::SBin { .. }
        | Inst::SBinImm { .. }
        | Inst::SUn { .. }
        | Inst::SSelect { .. }
        | Inst::SMovIfAny { .. }
        | Inst::LdStorageBelowNS { .. }
        | Inst::SLdUniform { .. }
        | Inst::SaveExec { .. }
        | Inst::Join { .. }
        | Inst::ClearMask { .. }
        | Inst::Leave { .. }
        | Inst::Rejoin { .. }
        | Inst::ExecFrom { .. }
        | Inst::JumpIfZeroS { .. }
        | Inst::JumpIfNonZeroS { .. }
        | Inst::JumpIfNone { .. }
        | Inst::JumpIfAny { .. }
        | Inst::Jump { .. }
        | Inst::Barrier
        | Inst::Halt => {}
    }
}

/// Successors of instruction `i` in the instruction graph.
fn successors(insts: &[Inst], i: usize) -> ([usize; 2], usize) {
    match insts[i] {
        Inst::Halt => ([0, 0], 0),
        Inst::Jump { to } => ([to as usize, 0], 1),
        Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } => ([i + 1, to as usize], 2),
        _ => ([i + 1, 0], 1),
    }
}

/// A fixed-size bit set.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &x)| {
            let mut x = x;
            std::iter::from_fn(move || {
                (x != 0).then(|| {
                    let b = x.trailing_zeros() as usize;
                    x &= x - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// Renumbers `prog`'s vector registers so temporaries with disjoint live ranges share one.
pub fn allocate(prog: &mut EntryProgram) {
    let n = prog.n_regs as usize;
    let insts = &prog.insts;
    if n <= 1 || insts.is_empty() {
        return;
    }
    // Who may share: written once, by an instruction that is not a variable store.
    let mut writes = vec![0u32; n];
    let mut pinned = vec![false; n];
    // Registers no instruction (directly or through the table it uses) or built-in names (values
    // the peephole fused away) get no register at all.
    let mut named = vec![false; n];
    pinned[ZERO as usize] = true;
    named[ZERO as usize] = true;
    for &(_, r) in &prog.builtins {
        pinned[r as usize] = true;
        named[r as usize] = true;
    }
    let mut acc = Access { uses: Vec::new(), defs: Vec::new() };
    for inst in insts {
        access(inst, &prog.tables, &mut acc);
        for &d in &acc.defs {
            writes[d as usize] += 1;
        }
        for &r in acc.uses.iter().chain(&acc.defs) {
            named[r as usize] = true;
        }
        match *inst {
            Inst::MovMasked { d, .. } | Inst::AddMasked { d, .. } => pinned[d as usize] = true,
            Inst::Gather { table, len, .. } | Inst::ScatterMasked { table, len, .. } => {
                for &r in &prog.tables[table as usize..][..len as usize] {
                    pinned[r as usize] = true;
                }
            }
            _ => {}
        }
    }
    for r in 0..n {
        pinned[r] = named[r] && (pinned[r] || writes[r] != 1);
    }
    // Temporaries get dense indices.
    let mut temp_of = vec![u32::MAX; n];
    let mut temps = Vec::new();
    for r in 0..n {
        if named[r] && !pinned[r] {
            temp_of[r] = temps.len() as u32;
            temps.push(r as Reg);
        }
    }
    let nt = temps.len();
    // Per instruction: its temporary uses and definitions.
    let per_inst: Vec<(Vec<usize>, Vec<usize>)> = insts
        .iter()
        .map(|inst| {
            access(inst, &prog.tables, &mut acc);
            let t = |r: &Reg| (temp_of[*r as usize] != u32::MAX).then(|| temp_of[*r as usize] as usize);
            (acc.uses.iter().filter_map(t).collect(), acc.defs.iter().filter_map(t).collect())
        })
        .collect();
    // Live-in sets, to a fixed point (backwards sweeps).
    let m = insts.len();
    let mut live_in = vec![Bits::new(nt); m];
    let mut out = Bits::new(nt);
    loop {
        let mut changed = false;
        for i in (0..m).rev() {
            out.0.fill(0);
            let (succ, k) = successors(insts, i);
            for &s in &succ[..k] {
                if s < m {
                    for (o, x) in out.0.iter_mut().zip(&live_in[s].0) {
                        *o |= x;
                    }
                }
            }
            let (uses, defs) = &per_inst[i];
            for &d in defs {
                out.clear(d);
            }
            for &u in uses {
                out.set(u);
            }
            if out.0 != live_in[i].0 {
                live_in[i].0.copy_from_slice(&out.0);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Read before written on some path: keeps its own register.
    let mut shared = vec![true; nt];
    for t in live_in[0].ones() {
        shared[t] = false;
    }
    // Interference: a definition with what is live after its instruction, the instruction's
    // other operands and its other destinations.
    let mut adj = vec![Bits::new(nt); nt];
    let mut def_order = Vec::with_capacity(nt);
    for i in 0..m {
        let (uses, defs) = &per_inst[i];
        if defs.is_empty() {
            continue;
        }
        out.0.fill(0);
        let (succ, k) = successors(insts, i);
        for &s in &succ[..k] {
            if s < m {
                for (o, x) in out.0.iter_mut().zip(&live_in[s].0) {
                    *o |= x;
                }
            }
        }
        for &u in uses {
            out.set(u);
        }
        for &d in defs {
            out.set(d);
        }
        let live: Vec<usize> = out.ones().collect();
        for &d in defs {
            def_order.push(d);
            for &l in &live {
                if l != d {
                    adj[d].set(l);
                    adj[l].set(d);
                }
            }
        }
    }
    // Colours: pinned registers first (register 0 stays 0), then the shared colours.
    let mut new_reg = vec![u32::MAX; n];
    let mut next = 0u32;
    for r in 0..n {
        if pinned[r] || (named[r] && !shared[temp_of[r] as usize]) {
            new_reg[r] = next;
            next += 1;
        }
    }
    debug_assert_eq!(new_reg[ZERO as usize], ZERO);
    let base = next;
    let mut colour = vec![u32::MAX; nt];
    let mut taken = Vec::new();
    for &t in &def_order {
        if !shared[t] || colour[t] != u32::MAX {
            continue;
        }
        taken.clear();
        taken.extend(adj[t].ones().filter(|&x| shared[x]).map(|x| colour[x]).filter(|&c| c != u32::MAX));
        taken.sort_unstable();
        taken.dedup();
        let c = taken.iter().enumerate().find(|&(i, &c)| c != i as u32).map_or(taken.len() as u32, |(i, _)| i as u32);
        colour[t] = c;
    }
    let mut n_colours = 0;
    for (t, &r) in temps.iter().enumerate() {
        if shared[t] {
            // A temporary with no definition reached would have been pinned (written once).
            let c = colour[t];
            debug_assert_ne!(c, u32::MAX);
            new_reg[r as usize] = base + c;
            n_colours = n_colours.max(c + 1);
        }
    }
    let map = |r: Reg| new_reg[r as usize];
    for inst in &mut prog.insts {
        rename(inst, &map);
    }
    // Entries of tables no instruction uses any more (a multi-word load the peephole fused
    // away) name no register: register 0.
    for r in &mut prog.tables {
        *r = if named[*r as usize] { map(*r) } else { ZERO };
    }
    for (_, r) in &mut prog.builtins {
        *r = map(*r);
    }
    prog.n_regs = base + n_colours;
}
