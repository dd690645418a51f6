//! naga IR → SIMT bytecode (see `isa`). Runs at build time.
//!
//! Passes, in the order they happen while walking an entry point:
//! - parse + validate (naga); override constants resolve to their defaults;
//! - values are scalarised: every expression becomes a list of registers, one per 32-bit
//!   component (vec4 → 4, struct/array → flattened), so swizzles, member access, splats,
//!   bitcasts and constant indexing cost no instructions (they alias registers);
//! - function variables live in registers (mem2reg): a load is a copy, a store a masked copy,
//!   a dynamic index a `Gather`/`ScatterMasked` over the variable's registers;
//! - calls are inlined (WGSL has no recursion), each call site with its own registers; a callee
//!   that returns only at its end needs no mask slots, its result aliases the returned value;
//! - constants are pooled into registers set once in a prologue, and constant right operands
//!   fold into `BinImm` (power-of-two div/rem/mul become shifts and masks);
//! - uniformity: values computed only from uniforms, workgroup ids/counts/sizes and constants
//!   live in scalar registers (one word per warp; broadcast where a vector op needs them);
//!   so do one-word function variables (loop counters) that every lane of the function stores
//!   together with uniform values (`SMovIfAny`): an entry point is lowered again without the
//!   variables found stored per lane or in per-lane control flow, or in loops that lanes leave
//!   at different times, until nothing new turns up;
//! - structured control flow becomes exec-mask operations with per-site mask slots; branches
//!   that no lane takes are jumped over; branches on scalar conditions are plain jumps;
//! - if-conversion: early-return helpers and branches that only assign variables become
//!   `Select`s, `for` conditions `BreakUnless`;
//! - then `peephole::fuse` forms the unpack superinstructions;
//! - finally `regalloc::allocate` lets values with disjoint live ranges share registers.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use naga::{
    AddressSpace, ArraySize, BinaryOperator, Binding, BuiltIn, Expression as E, Function, Handle, MathFunction, Module,
    ScalarKind, Span, Statement as S, TypeInner, UnaryOperator,
};

use crate::isa::*;
use crate::LowerError;

/// Maps a 1-based line of the (preprocessed) source to `file:line` of the original file.
pub type Origin<'a> = &'a dyn Fn(usize) -> String;

/// Compiles every compute entry point of one WGSL kernel.
pub fn compile_kernel(file: &str, text: &str, origin: Origin) -> Result<KernelProgram, LowerError> {
    let place_of = |span: Option<naga::SourceLocation>| span.map_or_else(|| file.to_string(), |l| origin(l.line_number as usize));
    let module = naga::front::wgsl::parse_str(text)
        .map_err(|e| LowerError::Invalid { place: place_of(e.location(text)), message: e.message().to_string() })?;
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    let info = validator
        .validate(&module)
        .map_err(|e| LowerError::Invalid { place: place_of(e.location(text)), message: e.as_inner().to_string() })?;
    let mut entries = Vec::new();
    for ep in module.entry_points.iter().filter(|ep| ep.stage == naga::ShaderStage::Compute) {
        if ep.workgroup_size_overrides.is_some() {
            return Err(LowerError::Unsupported { place: file.to_string(), what: format!("overridable workgroup size of `{}`", ep.name) });
        }
        let index = module.entry_points.iter().position(|e| e.name == ep.name).expect("entry point");
        // Function variables start as warp-uniform (scalar registers) where their type allows;
        // lowering finds the ones that are not (a store of a per-lane value, or in code that
        // only some lanes run) and the loops that lanes leave at different times, and the entry
        // point is lowered again with those facts until nothing new turns up.
        let mut facts = UniformFacts::default();
        let program = loop {
            let mut lowerer = Lowerer::new(&module, &info, text, origin);
            lowerer.facts = facts.clone();
            let (program, found) = lowerer.entry(index)?;
            if found == facts {
                break program;
            }
            facts = found;
        };
        entries.push(program);
    }
    Ok(KernelProgram { file: file.to_string(), entries })
}

#[derive(Clone)]
enum Root {
    Storage(u8),
    Uniform,
    Shared,
    /// A function variable: its flattened registers.
    Local(Rc<Vec<Reg>>),
}

#[derive(Clone)]
struct Ptr {
    root: Root,
    /// Bytes of naga's layout per word of ours in memory: 4, or 2 in a workgroup variable that
    /// holds f16 (each f16 widened to a word of its own, every byte offset halved).
    unit: u32,
    /// Per-lane word offset (memory) or flat component index (locals), if any.
    dynamic: Option<Reg>,
    off: u32,
}

#[derive(Clone)]
enum Val {
    Regs(Vec<Reg>),
    Ptr(Ptr),
}

/// What lowering learnt about uniformity: function variables that must stay per lane (by function
/// and variable), and loops (by their body) that lanes leave at different times.
#[derive(Clone, Default, PartialEq)]
struct UniformFacts {
    vector_locals: BTreeSet<(usize, Handle<naga::LocalVariable>)>,
    divergent_loops: BTreeSet<usize>,
}

/// One (inlined) function instance being lowered.
struct FnCtx<'f> {
    func: &'f Function,
    finfo: &'f naga::valid::FunctionInfo,
    values: HashMap<Handle<naga::Expression>, Val>,
    locals: HashMap<Handle<naga::LocalVariable>, Rc<Vec<Reg>>>,
    args: Vec<Val>,
    ret: MaskSlot,
    result: Option<Vec<Reg>>,
    /// The enclosing loops, innermost last.
    loops: Vec<LoopCtx>,
    is_entry: bool,
    depth: u32,
    /// The callee returns only at its end: no return mask, the result aliases the returned value.
    tail_return_only: bool,
    /// Enclosing constructs (in this function instance) that only some of its lanes may run:
    /// `if`s on per-lane conditions, loops that lanes leave at different times.
    div: u32,
}

struct LoopCtx {
    brk: MaskSlot,
    cont: MaskSlot,
    /// `depth` of the loop body's top level.
    body_depth: u32,
    /// Jumps to patch to the loop's continuing part (taken when every lane left the body).
    to_continuing: Vec<u32>,
    /// The loop's body (its key in `UniformFacts::divergent_loops`) and `div` inside it.
    key: usize,
    div: u32,
}

/// Largest branch (in expressions) that if-conversion evaluates unconditionally.
const MAX_SPECULATED_EXPRESSIONS: usize = 48;

struct Lowerer<'m> {
    module: &'m Module,
    info: &'m naga::valid::ModuleInfo,
    text: &'m str,
    origin: Origin<'m>,
    insts: Vec<Inst>,
    n_regs: u32,
    n_masks: u16,
    tables: Vec<Reg>,
    pool: HashMap<u32, Reg>,
    pool_value: HashMap<Reg, u32>,
    n_sregs: u32,
    /// Constants in scalar registers (set once in the prologue).
    scalar_pool: HashMap<u32, Reg>,
    scalar_builtins: Vec<(Builtin, SReg)>,
    /// Vector copies of scalar registers made in the current block and its parents (a copy
    /// made in a nested block may have been skipped, so each block drops its own on exit).
    broadcasts: HashMap<Reg, Reg>,
    shared: HashMap<Handle<naga::GlobalVariable>, u32>,
    shared_words: u32,
    builtins: Vec<(Builtin, Reg)>,
    storage_bindings: BTreeSet<u8>,
    span: Span,
    /// Uniformity facts assumed by this lowering, and what it found (`entry` returns them).
    facts: UniformFacts,
    found: UniformFacts,
    /// The variable (function, handle) of each scalar register that holds one.
    scalar_locals: HashMap<Reg, (usize, Handle<naga::LocalVariable>)>,
    /// Where the entry point first uses cooperative matrices, if it does.
    coop_span: Option<Span>,
}

type R<T> = Result<T, LowerError>;

impl<'m> Lowerer<'m> {
    fn new(module: &'m Module, info: &'m naga::valid::ModuleInfo, text: &'m str, origin: Origin<'m>) -> Self {
        Self {
            module,
            info,
            text,
            origin,
            insts: Vec::new(),
            n_regs: 1, // register 0 is ZERO
            n_masks: 0,
            tables: Vec::new(),
            pool: HashMap::from([(0, ZERO)]),
            pool_value: HashMap::from([(ZERO, 0)]),
            n_sregs: 1, // scalar register 0 is SZERO
            scalar_pool: HashMap::from([(0, SCALAR | SZERO)]),
            scalar_builtins: Vec::new(),
            broadcasts: HashMap::new(),
            shared: HashMap::new(),
            shared_words: 0,
            builtins: Vec::new(),
            storage_bindings: BTreeSet::new(),
            facts: UniformFacts::default(),
            found: UniformFacts::default(),
            scalar_locals: HashMap::new(),
            coop_span: None,
            span: Span::default(),
        }
    }

    fn place(&self) -> String {
        match self.span.is_defined() {
            true => (self.origin)(self.span.location(self.text).line_number as usize),
            false => "?".into(),
        }
    }

    fn unsupported<T>(&self, what: impl Into<String>) -> R<T> {
        Err(LowerError::Unsupported { place: self.place(), what: what.into() })
    }

    fn reg(&mut self) -> Reg {
        self.n_regs += 1;
        self.n_regs - 1
    }

    fn regs(&mut self, n: usize) -> Vec<Reg> {
        (0..n).map(|_| self.reg()).collect()
    }

    fn mask(&mut self) -> MaskSlot {
        self.n_masks += 1;
        self.n_masks - 1
    }

    /// Emits `inst`; scalar registers (tagged `SCALAR`) in its vector operands are replaced by
    /// vector copies (`Broadcast`), so only scalar-aware sites need to know about them.
    fn emit(&mut self, mut inst: Inst) -> u32 {
        if matches!(inst, Inst::CoopLoad { .. } | Inst::CoopStore { .. } | Inst::CoopMulAdd { .. }) {
            self.coop_span.get_or_insert(self.span);
        }
        let mut v = |r: &mut Reg| *r = self.vector(*r);
        match &mut inst {
            Inst::Mov { s, .. } | Inst::MovMasked { s, .. } | Inst::Un { a: s, .. } | Inst::BinImm { a: s, .. } => v(s),
            Inst::Bin { a, b, .. } => (v(a), v(b)).1,
            Inst::Fma { a, b, c, .. } => (v(a), v(b), v(c)).2,
            Inst::Select { c, t, f, .. } => (v(c), v(t), v(f)).2,
            Inst::ExtractBits { e, off, cnt, .. } => (v(e), v(off), v(cnt)).2,
            Inst::InsertBits { e, n, off, cnt, .. } => (v(e), v(n), v(off), v(cnt)).3,
            Inst::Gather { idx, .. } => v(idx),
            Inst::ScatterMasked { idx, s, .. } => (v(idx), v(s)).1,
            Inst::BinVS { a, .. } => v(a),
            Inst::LdStorage { addr, .. } | Inst::LdStorageBelow { addr, .. } | Inst::LdUniform { addr, .. } | Inst::LdShared { addr, .. } => v(addr),
            Inst::StStorage { s, addr, .. } | Inst::StShared { s, addr, .. } => (v(s), v(addr)).1,
            Inst::Atomic { addr, v: val, cmp, .. } => (v(addr), v(val), v(cmp)).2,
            Inst::AndCond { c } | Inst::ElseOf { c, .. } | Inst::BreakIf { c, .. } | Inst::BreakUnless { c, .. } => v(c),
            Inst::CoopLoad { addr, stride, .. } | Inst::CoopStore { addr, stride, .. } => (v(addr), v(stride)).1,
            _ => {}
        }
        self.insts.push(inst);
        self.insts.len() as u32 - 1
    }

    /// A new scalar register (tagged).
    fn sreg(&mut self) -> Reg {
        self.n_sregs += 1;
        SCALAR | (self.n_sregs - 1)
    }

    /// Warp-uniform: a scalar register or a pooled constant.
    fn is_uniform(&self, r: Reg) -> bool {
        r & SCALAR != 0 || self.pool_value.contains_key(&r)
    }

    /// The scalar register of a uniform value (constants go to the scalar pool).
    fn scalar(&mut self, r: Reg) -> SReg {
        if r & SCALAR != 0 {
            return r & !SCALAR;
        }
        let value = self.pool_value[&r];
        if let Some(&s) = self.scalar_pool.get(&value) {
            return s & !SCALAR;
        }
        let s = self.sreg();
        self.scalar_pool.insert(value, s);
        s & !SCALAR
    }

    /// The vector register of a value: scalar registers are broadcast once per block.
    fn vector(&mut self, r: Reg) -> Reg {
        if r & SCALAR == 0 {
            return r;
        }
        if let Some(&v) = self.broadcasts.get(&r) {
            return v;
        }
        let d = self.reg();
        self.insts.push(Inst::Broadcast { d, s: r & !SCALAR });
        self.broadcasts.insert(r, d);
        d
    }

    fn here(&self) -> u32 {
        self.insts.len() as u32
    }

    fn patch(&mut self, at: u32, target: u32) {
        match &mut self.insts[at as usize] {
            Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::Jump { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } => {
                *to = target
            }
            _ => unreachable!("patching a non-jump"),
        }
    }

    /// A register holding `value` in every lane (set once in the prologue).
    fn constant(&mut self, value: u32) -> Reg {
        if let Some(&r) = self.pool.get(&value) {
            return r;
        }
        let r = self.reg();
        self.pool.insert(value, r);
        self.pool_value.insert(r, value);
        r
    }

    fn table(&mut self, regs: &[Reg]) -> u32 {
        let regs: Vec<Reg> = regs.iter().map(|&r| self.vector(r)).collect();
        let at = self.tables.len() as u32;
        self.tables.extend_from_slice(&regs);
        at
    }

    fn entry(mut self, index: usize) -> R<(EntryProgram, UniformFacts)> {
        let module = self.module;
        let ep = &module.entry_points[index];
        let finfo = self.info.get_entry_point(index);
        self.span = module.entry_points[index].function.body.span_iter().next().map(|(_, s)| *s).unwrap_or_default();
        // Workgroup memory layout: every var<workgroup> at a word offset.
        for (h, gv) in module.global_variables.iter() {
            if gv.space == AddressSpace::WorkGroup {
                let inner = &module.types[gv.ty].inner;
                let words = self.mem_words(inner, self.unit_of(inner))?;
                self.shared.insert(h, self.shared_words);
                self.shared_words += words;
            }
        }
        let mut args = Vec::new();
        for arg in &ep.function.arguments {
            let Some(Binding::BuiltIn(b)) = arg.binding else {
                return self.unsupported("entry point arguments other than built-ins");
            };
            let n = self.flat_len(&module.types[arg.ty].inner)?;
            // Workgroup-wide built-ins live in scalar registers.
            let uniform = matches!(b, BuiltIn::WorkGroupId | BuiltIn::NumWorkGroups | BuiltIn::WorkGroupSize);
            let regs: Vec<Reg> = (0..n).map(|_| if uniform { self.sreg() } else { self.reg() }).collect();
            for (i, &r) in regs.iter().enumerate() {
                let i = i as u8;
                let which = match b {
                    BuiltIn::LocalInvocationIndex => Builtin::LocalIndex,
                    BuiltIn::LocalInvocationId => Builtin::LocalId(i),
                    BuiltIn::GlobalInvocationId => Builtin::GlobalId(i),
                    BuiltIn::WorkGroupId => Builtin::WorkgroupId(i),
                    BuiltIn::NumWorkGroups => Builtin::NumWorkgroups(i),
                    BuiltIn::WorkGroupSize => Builtin::WorkgroupSize(i),
                    other => return self.unsupported(format!("built-in {other:?}")),
                };
                if uniform {
                    self.scalar_builtins.push((which, r & !SCALAR));
                } else {
                    self.builtins.push((which, r));
                }
            }
            args.push(Val::Regs(regs));
        }
        let ret = self.mask();
        let mut ctx = FnCtx {
            func: &ep.function,
            finfo,
            values: HashMap::new(),
            locals: HashMap::new(),
            args,
            ret,
            result: None,
            loops: Vec::new(),
            is_entry: true,
            depth: 0,
            tail_return_only: false,
            div: 0,
        };
        self.function_body(&mut ctx)?;
        self.emit(Inst::Halt);
        if let Some(span) = self.coop_span.filter(|_| ep.workgroup_size.iter().product::<u32>() % SUBGROUP as u32 != 0) {
            self.span = span;
            return Err(LowerError::Unsupported {
                place: self.place(),
                what: format!("cooperative matrices in `{}`, whose workgroup size is not a multiple of {SUBGROUP} (whole subgroups)", ep.name),
            });
        }
        // Prologue: the constant pool (register 0 included), then the body with jumps shifted.
        let mut consts: Vec<(u32, Reg)> = self.pool.iter().map(|(&v, &r)| (v, r)).collect();
        consts.sort_by_key(|&(_, r)| r);
        let mut insts: Vec<Inst> = consts.into_iter().map(|(imm, d)| Inst::Movi { d, imm }).collect();
        let mut scalar_consts: Vec<(u32, Reg)> = self.scalar_pool.iter().map(|(&v, &r)| (v, r & !SCALAR)).collect();
        scalar_consts.sort_by_key(|&(_, r)| r);
        insts.extend(scalar_consts.into_iter().map(|(imm, d)| Inst::SMovi { d, imm }));
        let shift = insts.len() as u32;
        for mut inst in self.insts {
            if let Inst::JumpIfNone { to } | Inst::JumpIfAny { to } | Inst::Jump { to } | Inst::JumpIfZeroS { to, .. } | Inst::JumpIfNonZeroS { to, .. } = &mut inst {
                *to += shift;
            }
            insts.push(inst);
        }
        let mut program = EntryProgram {
            name: ep.name.clone(),
            workgroup_size: ep.workgroup_size,
            insts,
            n_regs: self.n_regs,
            n_sregs: self.n_sregs,
            n_masks: self.n_masks,
            tables: self.tables,
            shared_words: self.shared_words,
            builtins: self.builtins,
            scalar_builtins: self.scalar_builtins,
            storage_bindings: self.storage_bindings.into_iter().collect(),
        };
        crate::peephole::fuse(&mut program);
        crate::regalloc::allocate(&mut program);
        Ok((program, self.found))
    }

    /// Locals, then the body, of a function instance.
    fn function_body(&mut self, ctx: &mut FnCtx) -> R<()> {
        // The facts of this lowering start as those assumed.
        self.found.vector_locals.extend(self.facts.vector_locals.iter().copied());
        self.found.divergent_loops.extend(self.facts.divergent_loops.iter().copied());
        for (h, local) in ctx.func.local_variables.iter() {
            let inner = &self.module.types[local.ty].inner;
            let n = self.flat_len(inner)?;
            // A one-word variable not known to be per lane lives in a scalar register.
            let scalar = matches!(inner, TypeInner::Scalar(_)) && !self.facts.vector_locals.contains(&(fn_key(ctx.func), h));
            let regs = if scalar { vec![self.sreg()] } else { self.regs(n) };
            if scalar {
                self.scalar_locals.insert(regs[0], (fn_key(ctx.func), h));
            }
            let init = match local.init {
                Some(e) => self.const_words(ctx.func, e).ok_or_else(|| LowerError::Unsupported {
                    place: self.place(),
                    what: "a non-constant variable initializer".into(),
                })?,
                None => vec![0; n],
            };
            for (&d, imm) in regs.iter().zip(init) {
                if d & SCALAR != 0 {
                    self.insts.push(Inst::SMovi { d: d & !SCALAR, imm });
                } else {
                    self.emit(Inst::Movi { d, imm });
                }
            }
            ctx.locals.insert(h, Rc::new(regs));
        }
        self.block(ctx, &ctx.func.body.clone())
    }

    // ---- types

    /// Components (32-bit words) of a value of this type, flattened.
    fn flat_len(&self, inner: &TypeInner) -> R<usize> {
        Ok(match inner {
            TypeInner::Scalar(s) | TypeInner::Atomic(s) => {
                self.check_scalar(*s)?;
                1
            }
            TypeInner::Vector { size, scalar } => {
                self.check_scalar(*scalar)?;
                *size as usize
            }
            TypeInner::Array { base, size: ArraySize::Constant(n), .. } => {
                n.get() as usize * self.flat_len(&self.module.types[*base].inner)?
            }
            TypeInner::Struct { members, .. } => {
                let mut n = 0;
                for m in members {
                    n += self.flat_len(&self.module.types[m.ty].inner)?;
                }
                n
            }
            TypeInner::CooperativeMatrix { columns, rows, scalar, .. } => {
                self.check_scalar(*scalar)?;
                if (*columns as usize, *rows as usize) != (COOP_DIM, COOP_DIM) || scalar.kind != ScalarKind::Float {
                    return self.unsupported(format!("cooperative matrices other than 16 x 16 f16/f32 ({inner:?})"));
                }
                COOP_REGS as usize
            }
            other => return self.unsupported(format!("values of type {other:?}")),
        })
    }

    fn check_scalar(&self, s: naga::Scalar) -> R<()> {
        match (s.kind, s.width) {
            (ScalarKind::Bool, _) | (_, 4) | (ScalarKind::Float, 2) => Ok(()),
            _ => self.unsupported(format!("{:?} of {} bytes (only 32-bit scalars and f16)", s.kind, s.width)),
        }
    }

    /// Whether a type holds f16 scalars anywhere.
    fn holds_f16(&self, inner: &TypeInner) -> bool {
        match inner {
            TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } | TypeInner::Matrix { scalar: s, .. } | TypeInner::Atomic(s) => {
                s.kind == ScalarKind::Float && s.width == 2
            }
            TypeInner::CooperativeMatrix { scalar, .. } => scalar.width == 2,
            TypeInner::Array { base, .. } => self.holds_f16(&self.module.types[*base].inner),
            TypeInner::Struct { members, .. } => members.iter().any(|m| self.holds_f16(&self.module.types[m.ty].inner)),
            _ => false,
        }
    }

    /// Bytes of naga's layout per word of workgroup memory for a variable of this type (see
    /// `Ptr::unit`): a value is one word per scalar in registers, and f16 too in workgroup memory,
    /// which the host never sees, so no f16 packing or unpacking is needed.
    fn unit_of(&self, inner: &TypeInner) -> u32 {
        if self.holds_f16(inner) {
            2
        } else {
            4
        }
    }

    /// The f16 rounding of every component of a value of type `inner` when it is f16 (a fresh
    /// result of f32 arithmetic or a conversion); other values as they are. f32 has more than
    /// 2 x 11 + 2 significant bits, so +, -, *, / and sqrt computed in f32 and rounded to f16 give
    /// the correctly rounded f16 result.
    fn round_f16(&mut self, inner: &TypeInner, regs: Vec<Reg>) -> Vec<Reg> {
        match inner {
            TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } if s.kind == ScalarKind::Float && s.width == 2 => {
                regs.into_iter().map(|r| self.un(UnOp::QuantizeF16, r)).collect()
            }
            _ => regs,
        }
    }

    /// Word offsets in memory of each flattened component (`unit`: see `Ptr::unit`).
    fn mem_offsets(&self, inner: &TypeInner, base: u32, unit: u32, out: &mut Vec<u32>) -> R<()> {
        match inner {
            TypeInner::Scalar(_) | TypeInner::Atomic(_) => out.push(base),
            TypeInner::Vector { size, scalar } => out.extend((0..*size as u32).map(|i| base + i * scalar.width as u32 / unit)),
            TypeInner::Array { base: elem, size: ArraySize::Constant(n), stride } => {
                for i in 0..n.get() {
                    self.mem_offsets(&self.module.types[*elem].inner, base + i * stride / unit, unit, out)?;
                }
            }
            TypeInner::Struct { members, .. } => {
                for m in members {
                    self.mem_offsets(&self.module.types[m.ty].inner, base + m.offset / unit, unit, out)?;
                }
            }
            other => return self.unsupported(format!("memory of type {other:?}")),
        }
        Ok(())
    }

    fn mem_words(&self, inner: &TypeInner, unit: u32) -> R<u32> {
        Ok(match inner {
            TypeInner::Array { base, size: ArraySize::Constant(n), stride } => {
                let _ = base;
                n.get() * stride / unit
            }
            TypeInner::Struct { span, .. } => span / unit,
            TypeInner::Vector { size, scalar } => *size as u32 * scalar.width as u32 / unit,
            _ => 1,
        })
    }

    fn inner_of<'a>(&'a self, ctx: &'a FnCtx, h: Handle<naga::Expression>) -> &'a TypeInner {
        ctx.finfo[h].ty.inner_with(&self.module.types)
    }

    fn kind_of(&self, ctx: &FnCtx, h: Handle<naga::Expression>) -> R<ScalarKind> {
        match self.inner_of(ctx, h) {
            TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } => Ok(s.kind),
            other => self.unsupported(format!("arithmetic on {other:?}")),
        }
    }

    /// The type a pointer expression points at.
    fn pointee(&self, ctx: &FnCtx, h: Handle<naga::Expression>) -> R<TypeInner> {
        match self.inner_of(ctx, h) {
            TypeInner::Pointer { base, .. } => Ok(self.module.types[*base].inner.clone()),
            TypeInner::ValuePointer { size: None, scalar, .. } => Ok(TypeInner::Scalar(*scalar)),
            TypeInner::ValuePointer { size: Some(size), scalar, .. } => Ok(TypeInner::Vector { size: *size, scalar: *scalar }),
            other => self.unsupported(format!("pointer of type {other:?}")),
        }
    }

    // ---- constants

    fn literal_word(&self, lit: &naga::Literal) -> Option<u32> {
        Some(match *lit {
            naga::Literal::F32(v) => v.to_bits(),
            naga::Literal::U32(v) => v,
            naga::Literal::I32(v) => v as u32,
            naga::Literal::Bool(b) => b as u32,
            // f16 values live as the f32 of the same value.
            naga::Literal::F16(v) => v.to_f32().to_bits(),
            _ => return None,
        })
    }

    /// The words of a constant expression of `func` (or of the module's global expressions when
    /// `func` is None).
    fn const_words(&self, func: &Function, h: Handle<naga::Expression>) -> Option<Vec<u32>> {
        self.const_in(&func.expressions, h)
    }

    fn const_in(&self, arena: &naga::Arena<naga::Expression>, h: Handle<naga::Expression>) -> Option<Vec<u32>> {
        Some(match &arena[h] {
            E::Literal(lit) => vec![self.literal_word(lit)?],
            E::Constant(c) => self.const_in(&self.module.global_expressions, self.module.constants[*c].init)?,
            // Override constants resolve to their defaults (the engine sets no pipeline constants).
            E::Override(o) => self.const_in(&self.module.global_expressions, self.module.overrides[*o].init?)?,
            E::ZeroValue(ty) => vec![0; self.flat_len(&self.module.types[*ty].inner).ok()?],
            E::Compose { components, .. } => {
                let mut out = Vec::new();
                for &c in components {
                    out.extend(self.const_in(arena, c)?);
                }
                out
            }
            E::Splat { size, value } => {
                let v = self.const_in(arena, *value)?;
                (0..*size as usize).flat_map(|_| v.clone()).collect()
            }
            _ => return None,
        })
    }

    // ---- values

    fn val(&mut self, ctx: &mut FnCtx, h: Handle<naga::Expression>) -> R<Val> {
        if let Some(v) = ctx.values.get(&h) {
            return Ok(v.clone());
        }
        // Expressions evaluated before execution (not covered by an Emit).
        let v = match &ctx.func.expressions[h] {
            E::GlobalVariable(g) => {
                let gv = &self.module.global_variables[*g];
                let inner = &self.module.types[gv.ty].inner;
                if gv.space != AddressSpace::WorkGroup && self.holds_f16(inner) {
                    return self.unsupported("f16 in storage or uniform memory (the host's layout packs two a word)");
                }
                let unit = if gv.space == AddressSpace::WorkGroup { self.unit_of(inner) } else { 4 };
                let root = match gv.space {
                    AddressSpace::Storage { .. } => {
                        let b = gv.binding.as_ref().map_or(0, |b| b.binding) as u8;
                        self.storage_bindings.insert(b);
                        Root::Storage(b)
                    }
                    AddressSpace::Uniform => Root::Uniform,
                    AddressSpace::WorkGroup => Root::Shared,
                    other => return self.unsupported(format!("globals in address space {other:?}")),
                };
                let off = self.shared.get(g).copied().unwrap_or(0);
                Val::Ptr(Ptr { root, unit, dynamic: None, off })
            }
            E::LocalVariable(l) => Val::Ptr(Ptr { root: Root::Local(ctx.locals[l].clone()), unit: 4, dynamic: None, off: 0 }),
            E::FunctionArgument(i) => ctx.args[*i as usize].clone(),
            _ => match self.const_words(ctx.func, h) {
                Some(words) => Val::Regs(words.into_iter().map(|w| self.constant(w)).collect()),
                None => {
                    self.span = ctx.func.expressions.get_span(h);
                    return self.unsupported(format!("expression {:?} used before it is evaluated", ctx.func.expressions[h]));
                }
            },
        };
        ctx.values.insert(h, v.clone());
        Ok(v)
    }

    fn regs_of(&mut self, ctx: &mut FnCtx, h: Handle<naga::Expression>) -> R<Vec<Reg>> {
        match self.val(ctx, h)? {
            Val::Regs(r) => Ok(r),
            Val::Ptr(_) => self.unsupported("a pointer used as a value"),
        }
    }

    fn scalar_of(&mut self, ctx: &mut FnCtx, h: Handle<naga::Expression>) -> R<Reg> {
        let r = self.regs_of(ctx, h)?;
        match r.as_slice() {
            [one] => Ok(*one),
            _ => self.unsupported("a vector where a scalar is needed"),
        }
    }

    fn bin(&mut self, op: BinOp, a: Reg, b: Reg) -> Reg {
        if self.is_uniform(a) && self.is_uniform(b) && (a & SCALAR != 0 || b & SCALAR != 0) {
            let d = self.sreg();
            let sa = self.scalar(a);
            match self.pool_value.get(&b) {
                Some(&imm) => self.insts.push(Inst::SBinImm { op, d: d & !SCALAR, a: sa, imm }),
                None => {
                    let sb = self.scalar(b);
                    self.insts.push(Inst::SBin { op, d: d & !SCALAR, a: sa, b: sb })
                }
            }
            return d;
        }
        if b & SCALAR != 0 {
            let d = self.reg();
            let s = b & !SCALAR;
            self.emit(Inst::BinVS { op, d, a, s });
            return d;
        }
        if a & SCALAR != 0 && commutes(op) {
            return self.bin(op, b, a);
        }
        match self.pool_value.get(&b) {
            Some(&imm) => self.bin_imm(op, a, imm),
            None => {
                let d = self.reg();
                self.emit(Inst::Bin { op, d, a, b });
                d
            }
        }
    }

    /// `bin`, its result rounded to f16 when `f16`.
    fn bin_f16(&mut self, f16: bool, op: BinOp, a: Reg, b: Reg) -> Reg {
        let d = self.bin(op, a, b);
        if f16 {
            self.un(UnOp::QuantizeF16, d)
        } else {
            d
        }
    }

    fn un(&mut self, op: UnOp, a: Reg) -> Reg {
        if a & SCALAR != 0 {
            let d = self.sreg();
            self.insts.push(Inst::SUn { op, d: d & !SCALAR, a: a & !SCALAR });
            return d;
        }
        let d = self.reg();
        self.emit(Inst::Un { op, d, a });
        d
    }

    /// `c ? t : f`, on the scalar unit when all three are uniform.
    fn select(&mut self, c: Reg, t: Reg, f: Reg) -> Reg {
        if [c, t, f].iter().all(|&r| self.is_uniform(r)) && [c, t, f].iter().any(|&r| r & SCALAR != 0) {
            let d = self.sreg();
            let (c, t, f) = (self.scalar(c), self.scalar(t), self.scalar(f));
            self.insts.push(Inst::SSelect { d: d & !SCALAR, c, t, f });
            return d;
        }
        let d = self.reg();
        self.emit(Inst::Select { d, c, t, f });
        d
    }

    fn bin_imm(&mut self, op: BinOp, a: Reg, imm: u32) -> Reg {
        // Algebra: `x % 1`, `x & 0` are 0 (a uniform constant, so e.g. a loop counter that
        // starts at `tid % lanes` with lanes = 1 is warp-uniform); `x >> 0`, `x + 0`, `x * 1`
        // are `x` (no instruction).
        match (op, imm) {
            (BinOp::URem | BinOp::And | BinOp::IMul, 0) if op != BinOp::URem => return self.constant(0),
            (BinOp::URem, 1) => return self.constant(0),
            (BinOp::ShrU | BinOp::ShrS | BinOp::Shl | BinOp::IAdd | BinOp::ISub | BinOp::Or | BinOp::Xor, 0) | (BinOp::IMul | BinOp::UDiv, 1) => return a,
            _ => {}
        }
        if a & SCALAR != 0 {
            let d = self.sreg();
            self.insts.push(Inst::SBinImm { op, d: d & !SCALAR, a: a & !SCALAR, imm });
            return d;
        }
        // Strength reduction: division is ~25 cycles a lane, a shift one.
        let (op, imm) = match op {
            BinOp::UDiv if imm.is_power_of_two() => (BinOp::ShrU, imm.trailing_zeros()),
            BinOp::URem if imm.is_power_of_two() => (BinOp::And, imm - 1),
            BinOp::IMul if imm.is_power_of_two() => (BinOp::Shl, imm.trailing_zeros()),
            _ => (op, imm),
        };
        let d = self.reg();
        self.emit(Inst::BinImm { op, d, a, imm });
        d
    }

    /// Applies `f` component-wise, broadcasting scalars against vectors.
    fn zip(&mut self, a: &[Reg], b: &[Reg], mut f: impl FnMut(&mut Self, Reg, Reg) -> Reg) -> Vec<Reg> {
        let n = a.len().max(b.len());
        (0..n).map(|i| f(self, a[if a.len() == 1 { 0 } else { i }], b[if b.len() == 1 { 0 } else { i }])).collect()
    }

    fn expr(&mut self, ctx: &mut FnCtx, h: Handle<naga::Expression>) -> R<Val> {
        self.span = ctx.func.expressions.get_span(h);
        let expr = ctx.func.expressions[h].clone();
        let v = self.expr_value(ctx, h, &expr)?;
        // f16 results of arithmetic and conversions are rounded to f16 (computed in f32).
        Ok(match (&expr, v) {
            (E::Binary { .. } | E::Math { .. } | E::As { .. }, Val::Regs(regs)) => {
                let inner = self.inner_of(ctx, h).clone();
                Val::Regs(self.round_f16(&inner, regs))
            }
            (_, v) => v,
        })
    }

    fn is_f16(&self, ctx: &FnCtx, h: Handle<naga::Expression>) -> bool {
        let inner = self.inner_of(ctx, h);
        matches!(inner, TypeInner::Scalar(_) | TypeInner::Vector { .. }) && self.holds_f16(inner)
    }

    /// The memory, word stride and layout of a cooperative load or store; checks the matrix type.
    fn coop_data(&mut self, ctx: &mut FnCtx, matrix: &TypeInner, data: &naga::CooperativeData) -> R<(CoopSpace, Reg, u32, Reg)> {
        self.flat_len(matrix)?;
        let Val::Ptr(ptr) = self.val(ctx, data.pointer)? else { return self.unsupported("a cooperative load or store through a non-pointer") };
        let space = match ptr.root {
            Root::Shared => CoopSpace::Workgroup,
            Root::Storage(b) => CoopSpace::Storage(b),
            _ => return self.unsupported("cooperative loads and stores outside workgroup and storage memory"),
        };
        let TypeInner::CooperativeMatrix { scalar, .. } = matrix else { unreachable!("checked by naga") };
        if scalar.width as u32 != ptr.unit {
            return self.unsupported("a cooperative matrix in memory whose elements are not one word apart");
        }
        // The stride counts elements of the pointer's type (a vec4<f16> pointer: 4 scalars).
        let pointee = self.pointee(ctx, data.pointer)?;
        let words = self.mem_words(&pointee, ptr.unit)?;
        let stride = match self.const_words(ctx.func, data.stride) {
            Some(w) => self.constant(w[0].wrapping_mul(words)),
            None => {
                let s = self.scalar_of(ctx, data.stride)?;
                self.bin_imm(BinOp::IMul, s, words)
            }
        };
        Ok((space, ptr.dynamic.unwrap_or(ZERO), ptr.off, stride))
    }

    fn expr_value(&mut self, ctx: &mut FnCtx, h: Handle<naga::Expression>, expr: &naga::Expression) -> R<Val> {
        let expr = expr.clone();
        Ok(match expr {
            E::CooperativeLoad { data, .. } => {
                let matrix = self.inner_of(ctx, h).clone();
                let (space, addr, off, stride) = self.coop_data(ctx, &matrix, &data)?;
                let d = self.regs(COOP_REGS as usize);
                let table = self.table(&d);
                self.emit(Inst::CoopLoad { d: table, space, addr, off, stride, row_major: data.row_major });
                Val::Regs(d)
            }
            E::CooperativeMultiplyAdd { a, b, c } => {
                let matrix = self.inner_of(ctx, h).clone();
                self.flat_len(&matrix)?;
                let f16 = self.holds_f16(&matrix);
                let mut tables = [0; 3];
                for (t, x) in tables.iter_mut().zip([a, b, c]) {
                    let regs = self.regs_of(ctx, x)?;
                    *t = self.table(&regs);
                }
                let d = self.regs(COOP_REGS as usize);
                let table = self.table(&d);
                self.emit(Inst::CoopMulAdd { d: table, a: tables[0], b: tables[1], c: tables[2], f16 });
                Val::Regs(d)
            }
            E::Literal(_) | E::Constant(_) | E::ZeroValue(_) | E::GlobalVariable(_) | E::LocalVariable(_) | E::FunctionArgument(_) => {
                return self.val(ctx, h)
            }
            E::Compose { components, .. } => {
                let mut regs = Vec::new();
                for c in components {
                    regs.extend(self.regs_of(ctx, c)?);
                }
                Val::Regs(regs)
            }
            E::Splat { size, value } => {
                let r = self.scalar_of(ctx, value)?;
                Val::Regs(vec![r; size as usize])
            }
            E::Swizzle { size, vector, pattern } => {
                let v = self.regs_of(ctx, vector)?;
                Val::Regs(pattern[..size as usize].iter().map(|&c| v[c as usize]).collect())
            }
            E::AccessIndex { base, index } => self.access(ctx, base, None, index)?,
            E::Access { base, index } => match self.const_words(ctx.func, index) {
                Some(w) => self.access(ctx, base, None, w[0])?,
                None => {
                    let i = self.scalar_of(ctx, index)?;
                    self.access(ctx, base, Some(i), 0)?
                }
            },
            E::Load { pointer } => {
                let Val::Ptr(ptr) = self.val(ctx, pointer)? else { return self.unsupported("load through a non-pointer") };
                let ty = self.pointee(ctx, pointer)?;
                Val::Regs(self.load(&ptr, &ty)?)
            }
            E::Unary { op, expr } => {
                let kind = self.kind_of(ctx, expr)?;
                let a = self.regs_of(ctx, expr)?;
                let op = match (op, kind) {
                    (UnaryOperator::Negate, ScalarKind::Float) => UnOp::FNeg,
                    (UnaryOperator::Negate, _) => UnOp::INeg,
                    (UnaryOperator::LogicalNot, _) => UnOp::LogicalNot,
                    (UnaryOperator::BitwiseNot, _) => UnOp::Not,
                };
                Val::Regs(a.into_iter().map(|r| self.un(op, r)).collect())
            }
            E::Binary { op, left, right } => {
                let kind = self.kind_of(ctx, left)?;
                let op = self.bin_op(op, kind)?;
                let a = self.regs_of(ctx, left)?;
                let b = self.regs_of(ctx, right)?;
                Val::Regs(self.zip(&a, &b, |s, x, y| s.bin(op, x, y)))
            }
            E::Select { condition, accept, reject } => {
                let c = self.regs_of(ctx, condition)?;
                let t = self.regs_of(ctx, accept)?;
                let f = self.regs_of(ctx, reject)?;
                let n = t.len();
                Val::Regs((0..n).map(|i| self.select(c[if c.len() == 1 { 0 } else { i }], t[i], f[i])).collect())
            }
            E::Relational { fun, argument } => {
                let a = self.regs_of(ctx, argument)?;
                let op = match fun {
                    naga::RelationalFunction::All => BinOp::And,
                    naga::RelationalFunction::Any => BinOp::Or,
                    other => return self.unsupported(format!("relational function {other:?}")),
                };
                let mut acc = a[0];
                for &r in &a[1..] {
                    acc = self.bin(op, acc, r);
                }
                Val::Regs(vec![acc])
            }
            E::Math { fun, arg, arg1, arg2, arg3 } => self.math(ctx, fun, arg, arg1, arg2, arg3)?,
            E::As { expr, kind, convert } => {
                let from = self.kind_of(ctx, expr)?;
                let a = self.regs_of(ctx, expr)?;
                if convert.is_none() {
                    if self.is_f16(ctx, expr) || self.is_f16(ctx, h) {
                        return self.unsupported("bitcasts of f16 values (an f16 is an f32 word in registers)");
                    }
                    return Ok(Val::Regs(a)); // bitcast: registers are untyped
                }
                use ScalarKind::*;
                let op = match (from, kind) {
                    (x, y) if x == y => None,
                    (Uint | Sint, Uint | Sint) | (Bool, Uint | Sint) => None,
                    (Uint, Float) => Some(UnOp::U2F),
                    (Sint, Float) => Some(UnOp::S2F),
                    (Float, Uint) => Some(UnOp::F2U),
                    (Float, Sint) => Some(UnOp::F2S),
                    (Bool, Float) => Some(UnOp::Bool2F),
                    (Uint | Sint, Bool) => Some(UnOp::ToBool),
                    (Float, Bool) => {
                        return Ok(Val::Regs(a.into_iter().map(|r| self.bin_imm(BinOp::FNe, r, 0)).collect()));
                    }
                    (x, y) => return self.unsupported(format!("conversion {x:?} -> {y:?}")),
                };
                Val::Regs(match op {
                    None => a,
                    Some(op) => a.into_iter().map(|r| self.un(op, r)).collect(),
                })
            }
            E::ArrayLength(ptr) => {
                let Val::Ptr(Ptr { root: Root::Storage(binding), .. }) = self.val(ctx, ptr)? else {
                    return self.unsupported("arrayLength of a non-storage array");
                };
                let stride = match self.pointee(ctx, ptr)? {
                    TypeInner::Array { stride, .. } => stride,
                    _ => return self.unsupported("arrayLength of a struct member"),
                };
                let d = self.reg();
                self.emit(Inst::ArrayLength { d, binding, offset_words: 0, stride_words: stride / 4 });
                Val::Regs(vec![d])
            }
            other => return self.unsupported(format!("expression {other:?}")),
        })
    }

    fn bin_op(&self, op: BinaryOperator, kind: ScalarKind) -> R<BinOp> {
        use BinaryOperator as B;
        use ScalarKind::*;
        Ok(match (op, kind) {
            (B::Add, Float) => BinOp::FAdd,
            (B::Add, _) => BinOp::IAdd,
            (B::Subtract, Float) => BinOp::FSub,
            (B::Subtract, _) => BinOp::ISub,
            (B::Multiply, Float) => BinOp::FMul,
            (B::Multiply, _) => BinOp::IMul,
            (B::Divide, Float) => BinOp::FDiv,
            (B::Divide, Sint) => BinOp::SDiv,
            (B::Divide, _) => BinOp::UDiv,
            (B::Modulo, Float) => BinOp::FRem,
            (B::Modulo, Sint) => BinOp::SRem,
            (B::Modulo, _) => BinOp::URem,
            (B::Equal, Float) => BinOp::FEq,
            (B::Equal, _) => BinOp::IEq,
            (B::NotEqual, Float) => BinOp::FNe,
            (B::NotEqual, _) => BinOp::INe,
            (B::Less, Float) => BinOp::FLt,
            (B::Less, Sint) => BinOp::SLt,
            (B::Less, _) => BinOp::ULt,
            (B::LessEqual, Float) => BinOp::FLe,
            (B::LessEqual, Sint) => BinOp::SLe,
            (B::LessEqual, _) => BinOp::ULe,
            (B::Greater, Float) => BinOp::FGt,
            (B::Greater, Sint) => BinOp::SGt,
            (B::Greater, _) => BinOp::UGt,
            (B::GreaterEqual, Float) => BinOp::FGe,
            (B::GreaterEqual, Sint) => BinOp::SGe,
            (B::GreaterEqual, _) => BinOp::UGe,
            (B::And | B::LogicalAnd, _) => BinOp::And,
            (B::InclusiveOr | B::LogicalOr, _) => BinOp::Or,
            (B::ExclusiveOr, _) => BinOp::Xor,
            (B::ShiftLeft, _) => BinOp::Shl,
            (B::ShiftRight, Sint) => BinOp::ShrS,
            (B::ShiftRight, _) => BinOp::ShrU,
        })
    }

    fn math(
        &mut self,
        ctx: &mut FnCtx,
        fun: MathFunction,
        arg: Handle<naga::Expression>,
        arg1: Option<Handle<naga::Expression>>,
        arg2: Option<Handle<naga::Expression>>,
        arg3: Option<Handle<naga::Expression>>,
    ) -> R<Val> {
        use MathFunction as M;
        use ScalarKind::*;
        let kind = self.kind_of(ctx, arg)?;
        // f16 operands: results are rounded by `expr`, the steps of Dot and Mix here.
        let f16 = self.is_f16(ctx, arg);
        let a = self.regs_of(ctx, arg)?;
        let b = match arg1 {
            Some(h) => self.regs_of(ctx, h)?,
            None => Vec::new(),
        };
        let c = match arg2 {
            Some(h) => self.regs_of(ctx, h)?,
            None => Vec::new(),
        };
        let unary = |s: &mut Self, op: UnOp, a: &[Reg]| Val::Regs(a.iter().map(|&r| s.un(op, r)).collect());
        let float_un = |op| if kind == Float { Ok(op) } else { Err(()) };
        let simple = match fun {
            M::Exp => float_un(UnOp::FExp),
            M::Exp2 => float_un(UnOp::FExp2),
            M::Log => float_un(UnOp::FLog),
            M::Log2 => float_un(UnOp::FLog2),
            M::Sqrt => float_un(UnOp::FSqrt),
            M::InverseSqrt => float_un(UnOp::FRsqrt),
            M::Sin => float_un(UnOp::FSin),
            M::Cos => float_un(UnOp::FCos),
            M::Tan => float_un(UnOp::FTan),
            M::Tanh => float_un(UnOp::FTanh),
            M::Floor => float_un(UnOp::FFloor),
            M::Ceil => float_un(UnOp::FCeil),
            M::Round => float_un(UnOp::FRound),
            M::Trunc => float_un(UnOp::FTrunc),
            M::Fract => float_un(UnOp::FFract),
            M::QuantizeToF16 => float_un(UnOp::QuantizeF16),
            M::CountOneBits => Ok(UnOp::CountOnes),
            M::CountLeadingZeros => Ok(UnOp::LeadingZeros),
            M::CountTrailingZeros => Ok(UnOp::TrailingZeros),
            M::ReverseBits => Ok(UnOp::ReverseBits),
            M::Sign if kind == Float => Ok(UnOp::FSign),
            M::Sign if kind == Sint => Ok(UnOp::SSign),
            M::Abs if kind == Float => Ok(UnOp::FAbs),
            M::Abs if kind == Sint => Ok(UnOp::SAbs),
            M::Abs => return Ok(Val::Regs(a)),
            _ => Err(()),
        };
        if let Ok(op) = simple {
            return Ok(unary(self, op, &a));
        }
        let (min, max) = match kind {
            Float => (BinOp::FMin, BinOp::FMax),
            Sint => (BinOp::SMin, BinOp::SMax),
            _ => (BinOp::UMin, BinOp::UMax),
        };
        Ok(Val::Regs(match fun {
            M::Min => self.zip(&a, &b, |s, x, y| s.bin(min, x, y)),
            M::Max => self.zip(&a, &b, |s, x, y| s.bin(max, x, y)),
            M::Clamp => {
                let lo = self.zip(&a, &b, |s, x, y| s.bin(max, x, y));
                self.zip(&lo, &c, |s, x, y| s.bin(min, x, y))
            }
            M::Saturate => {
                let zero = self.constant(0);
                let one = self.constant(1f32.to_bits());
                let lo = self.zip(&a, &[zero], |s, x, y| s.bin(BinOp::FMax, x, y));
                self.zip(&lo, &[one], |s, x, y| s.bin(BinOp::FMin, x, y))
            }
            M::Pow => self.zip(&a, &b, |s, x, y| s.bin(BinOp::FPow, x, y)),
            M::Atan2 => self.zip(&a, &b, |s, x, y| s.bin(BinOp::FAtan2, x, y)),
            M::Step => self.zip(&a, &b, |s, x, y| s.bin(BinOp::FStep, x, y)),
            M::Fma => (0..a.len())
                .map(|i| {
                    let d = self.reg();
                    self.emit(Inst::Fma { d, a: a[i], b: b[i], c: c[i] });
                    d
                })
                .collect(),
            M::Mix => {
                // a + (b - a) * t, each step rounded to f16 for f16 operands.
                let diff = self.zip(&b, &a, |s, x, y| s.bin_f16(f16, BinOp::FSub, x, y));
                let scaled = self.zip(&diff, &c, |s, x, y| s.bin_f16(f16, BinOp::FMul, x, y));
                self.zip(&a, &scaled, |s, x, y| s.bin_f16(f16, BinOp::FAdd, x, y))
            }
            M::Dot => {
                let (mul, add) = if kind == Float { (BinOp::FMul, BinOp::FAdd) } else { (BinOp::IMul, BinOp::IAdd) };
                let products = self.zip(&a, &b, |s, x, y| s.bin_f16(f16, mul, x, y));
                let mut acc = products[0];
                for &p in &products[1..] {
                    acc = self.bin_f16(f16, add, acc, p);
                }
                vec![acc]
            }
            M::ExtractBits => {
                let (off, cnt) = (b[0], c[0]);
                a.iter()
                    .map(|&e| {
                        let d = self.reg();
                        self.emit(Inst::ExtractBits { signed: kind == Sint, d, e, off, cnt });
                        d
                    })
                    .collect()
            }
            M::InsertBits => {
                let Some(h3) = arg3 else { return self.unsupported("insertBits without a count") };
                let cnt = self.scalar_of(ctx, h3)?;
                let off = c[0];
                (0..a.len())
                    .map(|i| {
                        let d = self.reg();
                        self.emit(Inst::InsertBits { d, e: a[i], n: b[i], off, cnt });
                        d
                    })
                    .collect()
            }
            M::Unpack2x16float => vec![self.un(UnOp::F16LoToF32, a[0]), self.un(UnOp::F16HiToF32, a[0])],
            M::Unpack4xU8 => (0..4).map(|i| {
                let shifted = self.bin_imm(BinOp::ShrU, a[0], 8 * i);
                self.bin_imm(BinOp::And, shifted, 0xff)
            }).collect(),
            M::Unpack4xI8 => (0..4).map(|i| {
                let up = self.bin_imm(BinOp::Shl, a[0], 24 - 8 * i);
                self.bin_imm(BinOp::ShrS, up, 24)
            }).collect(),
            // Four byte products summed in i32 (wrapping, as the WGSL builtins).
            M::Dot4I8Packed | M::Dot4U8Packed => {
                let signed = fun == M::Dot4I8Packed;
                let mut acc = None;
                for i in 0..4 {
                    let byte = |s: &mut Self, r: Reg| {
                        if signed {
                            let up = s.bin_imm(BinOp::Shl, r, 24 - 8 * i);
                            s.bin_imm(BinOp::ShrS, up, 24)
                        } else {
                            let shifted = s.bin_imm(BinOp::ShrU, r, 8 * i);
                            s.bin_imm(BinOp::And, shifted, 0xff)
                        }
                    };
                    let (x, y) = (byte(self, a[0]), byte(self, b[0]));
                    let product = self.bin(BinOp::IMul, x, y);
                    acc = Some(match acc {
                        None => product,
                        Some(sum) => self.bin(BinOp::IAdd, sum, product),
                    });
                }
                vec![acc.expect("four products")]
            }
            other => return self.unsupported(format!("math function {other:?}")),
        }))
    }

    /// `base[index]` / `base.member`: pointer arithmetic on pointers, register picks on values.
    fn access(&mut self, ctx: &mut FnCtx, base: Handle<naga::Expression>, dynamic: Option<Reg>, index: u32) -> R<Val> {
        let base_val = self.val(ctx, base)?;
        match base_val {
            Val::Regs(regs) => {
                let inner = self.inner_of(ctx, base).clone();
                let elem = match &inner {
                    TypeInner::Vector { .. } => 1,
                    TypeInner::Array { base, .. } => self.flat_len(&self.module.types[*base].inner)?,
                    TypeInner::Struct { members, .. } if dynamic.is_none() => {
                        let mut start = 0;
                        for m in &members[..index as usize] {
                            start += self.flat_len(&self.module.types[m.ty].inner)?;
                        }
                        let len = self.flat_len(&self.module.types[members[index as usize].ty].inner)?;
                        return Ok(Val::Regs(regs[start..start + len].to_vec()));
                    }
                    other => return self.unsupported(format!("indexing a value of type {other:?}")),
                };
                match dynamic {
                    None => {
                        let start = index as usize * elem;
                        Ok(Val::Regs(regs[start..start + elem].to_vec()))
                    }
                    Some(i) => {
                        let idx = if elem == 1 { i } else { self.bin_imm(BinOp::IMul, i, elem as u32) };
                        let table = self.table(&regs);
                        Ok(Val::Regs(
                            (0..elem as u32)
                                .map(|k| {
                                    let d = self.reg();
                                    self.emit(Inst::Gather { d, table, len: regs.len() as u32, idx, off: k });
                                    d
                                })
                                .collect(),
                        ))
                    }
                }
            }
            Val::Ptr(ptr) => {
                let local = matches!(ptr.root, Root::Local(_));
                let pointee = self.pointee(ctx, base)?;
                let unit = ptr.unit;
                let (stride, member_off) = match &pointee {
                    TypeInner::Vector { scalar, .. } => {
                        let s = if local { 1 } else { scalar.width as u32 / unit };
                        (s, index * s)
                    }
                    TypeInner::Array { base: elem, stride, .. } => {
                        let s = if local { self.flat_len(&self.module.types[*elem].inner)? as u32 } else { stride / unit };
                        (s, index * s)
                    }
                    TypeInner::Struct { members, .. } => {
                        let off = if local {
                            let mut start = 0;
                            for m in &members[..index as usize] {
                                start += self.flat_len(&self.module.types[m.ty].inner)? as u32;
                            }
                            start
                        } else {
                            members[index as usize].offset / unit
                        };
                        (0, off)
                    }
                    other => return self.unsupported(format!("indexing through a pointer to {other:?}")),
                };
                let mut ptr = ptr;
                match dynamic {
                    None => ptr.off += member_off,
                    Some(i) => {
                        let scaled = match stride {
                            1 => i,
                            s if s.is_power_of_two() => self.bin_imm(BinOp::Shl, i, s.trailing_zeros()),
                            s => self.bin_imm(BinOp::IMul, i, s),
                        };
                        ptr.dynamic = Some(match ptr.dynamic {
                            None => scaled,
                            Some(d) => self.bin(BinOp::IAdd, d, scaled),
                        });
                    }
                }
                Ok(Val::Ptr(ptr))
            }
        }
    }

    fn load(&mut self, ptr: &Ptr, ty: &TypeInner) -> R<Vec<Reg>> {
        let addr = ptr.dynamic.unwrap_or(ZERO);
        match &ptr.root {
            Root::Local(regs) => {
                let n = self.flat_len(ty)?;
                let table = ptr.dynamic.map(|_| self.table(regs));
                Ok((0..n as u32)
                    .map(|k| {
                        let s = regs[(ptr.off + k) as usize];
                        if s & SCALAR != 0 {
                            // A warp-uniform variable: a scalar copy (the variable may change
                            // while the value is still needed).
                            let d = self.sreg();
                            self.insts.push(Inst::SBinImm { op: BinOp::Or, d: d & !SCALAR, a: s & !SCALAR, imm: 0 });
                            return d;
                        }
                        let d = self.reg();
                        match table {
                            None => self.emit(Inst::Mov { d, s: regs[(ptr.off + k) as usize] }),
                            Some(table) => self.emit(Inst::Gather { d, table, len: regs.len() as u32, idx: addr, off: ptr.off + k }),
                        };
                        d
                    })
                    .collect())
            }
            root => {
                let mut offs = Vec::new();
                self.mem_offsets(ty, ptr.off, ptr.unit, &mut offs)?;
                Ok(offs
                    .into_iter()
                    .map(|off| {
                        if matches!(root, Root::Uniform) && (addr == ZERO || addr & SCALAR != 0) {
                            // A uniform at a warp-uniform address: one scalar load.
                            let d = self.sreg();
                            self.insts.push(Inst::SLdUniform { d: d & !SCALAR, addr: addr & !SCALAR, off });
                            return d;
                        }
                        let d = self.reg();
                        self.emit(match root {
                            Root::Storage(binding) => Inst::LdStorage { d, binding: *binding, addr, off },
                            Root::Uniform => Inst::LdUniform { d, addr, off },
                            _ => Inst::LdShared { d, addr, off },
                        });
                        d
                    })
                    .collect())
            }
        }
    }

    /// `direct`: the store names a variable of the function instance being lowered (not one
    /// reached through a pointer argument), with `div` per-lane constructs around it there.
    fn store(&mut self, ptr: &Ptr, ty: &TypeInner, value: &[Reg], direct: bool, div: u32) -> R<()> {
        let addr = ptr.dynamic.unwrap_or(ZERO);
        match &ptr.root {
            Root::Local(regs) => {
                if regs.iter().any(|&r| r & SCALAR != 0) {
                    // A warp-uniform variable: its value must be uniform, and every lane of the
                    // function instance must store it together (else it is per lane: lowered
                    // again with the variable in vector registers).
                    let (&d, &s) = (&regs[ptr.off as usize], &value[0]);
                    if ptr.dynamic.is_some() || value.len() != 1 || !self.is_uniform(s) || !direct || div > 0 {
                        self.found.vector_locals.insert(self.scalar_locals[&d]);
                        return Ok(());
                    }
                    let s = self.scalar(s);
                    self.insts.push(Inst::SMovIfAny { d: d & !SCALAR, s });
                    return Ok(());
                }
                let table = ptr.dynamic.map(|_| self.table(regs));
                for (k, &s) in value.iter().enumerate() {
                    let k = k as u32;
                    match table {
                        None => self.emit(Inst::MovMasked { d: regs[(ptr.off + k) as usize], s }),
                        Some(table) => self.emit(Inst::ScatterMasked { table, len: regs.len() as u32, idx: addr, off: ptr.off + k, s }),
                    };
                }
            }
            Root::Uniform => return self.unsupported("a store to a uniform"),
            root => {
                let mut offs = Vec::new();
                self.mem_offsets(ty, ptr.off, ptr.unit, &mut offs)?;
                for (off, &s) in offs.into_iter().zip(value) {
                    self.emit(match root {
                        Root::Storage(binding) => Inst::StStorage { s, binding: *binding, addr, off },
                        _ => Inst::StShared { s, addr, off },
                    });
                }
            }
        }
        Ok(())
    }

    // ---- statements

    fn block(&mut self, ctx: &mut FnCtx, block: &naga::Block) -> R<()> {
        let outer = self.broadcasts.clone();
        for (stmt, span) in block.span_iter() {
            self.span = *span;
            self.statement(ctx, stmt)?;
        }
        self.broadcasts = outer;
        Ok(())
    }

    /// `if (c) {} else { break; }` (a `for` condition) and `if (c) { break; }`: lanes leave the
    /// loop by one mask op; when none is left at the body's top level, a jump skips to the
    /// continuing part (which lanes that `continue`d still need).
    fn try_loop_exit(&mut self, ctx: &mut FnCtx, cond: Handle<naga::Expression>, accept: &naga::Block, reject: &naga::Block) -> R<bool> {
        let is_break = |b: &naga::Block| b.len() == 1 && matches!(b[0], S::Break);
        let unless = accept.is_empty() && is_break(reject);
        if ctx.loops.is_empty() || !(unless || (reject.is_empty() && is_break(accept))) {
            return Ok(false);
        }
        let c = self.scalar_of(ctx, cond)?;
        let (brk, body_depth) = ctx.loops.last().map(|l| (l.brk, l.body_depth)).expect("loop");
        if c & SCALAR != 0 {
            // Uniform: every active lane leaves or none does (all of the loop's lanes, unless
            // this point is inside a per-lane branch of the loop).
            let l = ctx.loops.last().expect("loop");
            if ctx.div > l.div {
                self.found.divergent_loops.insert(l.key);
            }
            let c = c & !SCALAR;
            let stay = self.emit(if unless { Inst::JumpIfNonZeroS { c, to: 0 } } else { Inst::JumpIfZeroS { c, to: 0 } });
            self.emit(Inst::Leave { m: brk });
            if ctx.depth == body_depth {
                let jump = self.emit(Inst::Jump { to: 0 });
                ctx.loops.last_mut().expect("loop").to_continuing.push(jump);
            }
            let next = self.here();
            self.patch(stay, next);
            return Ok(true);
        }
        // Lanes may leave at different times (also when `c` is uniform here but this point is
        // inside a per-lane branch of the loop).
        self.found.divergent_loops.insert(ctx.loops.last().expect("loop").key);
        self.emit(if unless { Inst::BreakUnless { m: brk, c } } else { Inst::BreakIf { m: brk, c } });
        if ctx.depth == body_depth {
            let jump = self.emit(Inst::JumpIfNone { to: 0 });
            ctx.loops.last_mut().expect("loop").to_continuing.push(jump);
        }
        Ok(true)
    }

    /// If-conversion of `if (c) { x = a; } else { y = b; }` where both branches only evaluate
    /// expressions and then store to function variables: both sides run, and each stored
    /// variable takes `select` of the two values (or its old value), with no mask work.
    fn try_select_stores(&mut self, ctx: &mut FnCtx, cond: Handle<naga::Expression>, accept: &naga::Block, reject: &naga::Block) -> R<bool> {
        let split = |b| split_emits_stores(ctx.func, b);
        let (Some((emits_a, stores_a, na)), Some((emits_b, stores_b, nb))) = (split(accept), split(reject)) else {
            return Ok(false);
        };
        if na + nb > MAX_SPECULATED_EXPRESSIONS || stores_a.len() + stores_b.len() == 0 {
            return Ok(false);
        }
        let c = self.scalar_of(ctx, cond)?;
        if c & SCALAR != 0 {
            return Ok(false); // a uniform branch is a cheaper plain jump
        }
        // Destination register -> (value if c, value if !c).
        let mut merged: Vec<(Reg, Option<Reg>, Option<Reg>)> = Vec::new();
        for (side, emits, stores) in [(0, emits_a, stores_a), (1, emits_b, stores_b)] {
            for stmt in emits {
                self.statement(ctx, stmt)?;
            }
            for stmt in stores {
                let S::Store { pointer, value } = stmt else { unreachable!("checked above") };
                let Val::Ptr(Ptr { root: Root::Local(regs), dynamic: None, off, .. }) = self.val(ctx, *pointer)? else {
                    unreachable!("checked above")
                };
                let v = self.regs_of(ctx, *value)?;
                for (k, &r) in v.iter().enumerate() {
                    let dest = regs[off as usize + k];
                    if dest & SCALAR != 0 {
                        // A store on a per-lane condition: the variable is per lane.
                        self.found.vector_locals.insert(self.scalar_locals[&dest]);
                        continue;
                    }
                    let slot = match merged.iter().position(|m| m.0 == dest) {
                        Some(i) => i,
                        None => {
                            merged.push((dest, None, None));
                            merged.len() - 1
                        }
                    };
                    if side == 0 {
                        merged[slot].1 = Some(r);
                    } else {
                        merged[slot].2 = Some(r);
                    }
                }
            }
        }
        for (dest, t, f) in merged {
            let d = self.reg();
            self.emit(Inst::Select { d, c, t: t.unwrap_or(dest), f: f.unwrap_or(dest) });
            self.emit(Inst::MovMasked { d: dest, s: d });
        }
        Ok(true)
    }

    /// If-conversion of a helper made of early returns, `if (c) { return a; } ... return b;`
    /// (only expressions besides): every value is computed and the first true condition's
    /// value is selected, instead of mask slots around each return.
    fn try_inline_select(&mut self, ctx: &FnCtx, callee: &'m Function, finfo: &'m naga::valid::FunctionInfo, args: &[Val]) -> R<Option<Vec<Reg>>> {
        let _ = ctx;
        if !callee.local_variables.is_empty() || callee.result.is_none() || returns_only_at_end(&callee.body) {
            return Ok(None);
        }
        let mut total = 0;
        let n = callee.body.len();
        for (i, stmt) in callee.body.iter().enumerate() {
            let ok = match stmt {
                S::Emit(r) => {
                    total += r.clone().count();
                    true
                }
                S::If { accept, reject, .. } if reject.is_empty() && !accept.is_empty() => {
                    let (last, emits) = accept.split_last().expect("non-empty");
                    match (emitted_expressions(emits), last) {
                        (Some(k), S::Return { value: Some(_) }) => {
                            total += k;
                            true
                        }
                        _ => false,
                    }
                }
                S::Return { value: Some(_) } => i + 1 == n,
                _ => false,
            };
            if !ok || total > MAX_SPECULATED_EXPRESSIONS {
                return Ok(None);
            }
        }
        let mut inner = FnCtx {
            func: callee,
            finfo,
            values: HashMap::new(),
            locals: HashMap::new(),
            args: args.to_vec(),
            ret: NO_MASK,
            result: None,
            loops: Vec::new(),
            is_entry: false,
            depth: 0,
            tail_return_only: true,
            div: 0,
        };
        let span = self.span;
        let mut early: Vec<(Reg, Vec<Reg>)> = Vec::new();
        let mut result = Vec::new();
        for (stmt, stmt_span) in callee.body.span_iter() {
            self.span = *stmt_span;
            match stmt {
                S::If { condition, accept, .. } => {
                    let c = self.scalar_of(&mut inner, *condition)?;
                    let (last, emits) = accept.split_last().expect("non-empty");
                    for e in emits {
                        self.statement(&mut inner, e)?;
                    }
                    let S::Return { value: Some(v) } = last else { unreachable!("checked above") };
                    early.push((c, self.regs_of(&mut inner, *v)?));
                }
                S::Return { value: Some(v) } => result = self.regs_of(&mut inner, *v)?,
                other => self.statement(&mut inner, other)?,
            }
        }
        for (c, v) in early.into_iter().rev() {
            result = v
                .iter()
                .zip(&result)
                .map(|(&t, &f)| self.select(c, t, f))
                .collect();
        }
        self.span = span;
        Ok(Some(result))
    }

    fn join(&mut self, ctx: &FnCtx, saved: MaskSlot) {
        let (a, b) = ctx.loops.last().map_or((NO_MASK, NO_MASK), |l| (l.brk, l.cont));
        self.emit(Inst::Join { saved, a, b, c: ctx.ret });
    }

    fn statement(&mut self, ctx: &mut FnCtx, stmt: &S) -> R<()> {
        match stmt {
            S::Emit(range) => {
                for h in range.clone() {
                    let v = self.expr(ctx, h)?;
                    ctx.values.insert(h, v);
                }
            }
            S::Block(b) => self.block(ctx, b)?,
            S::If { condition, accept, reject } if self.try_loop_exit(ctx, *condition, accept, reject)? => {}
            S::If { condition, accept, reject } if self.try_select_stores(ctx, *condition, accept, reject)? => {}
            S::If { condition, accept, reject } if self.scalar_of(ctx, *condition)? & SCALAR != 0 => {
                // A warp-uniform condition: a plain jump, no mask work.
                let c = self.scalar_of(ctx, *condition)? & !SCALAR;
                let skip = self.emit(Inst::JumpIfZeroS { c, to: 0 });
                ctx.depth += 1;
                self.block(ctx, accept)?;
                if reject.is_empty() {
                    let end = self.here();
                    self.patch(skip, end);
                } else {
                    let jump = self.emit(Inst::Jump { to: 0 });
                    let else_at = self.here();
                    self.patch(skip, else_at);
                    self.block(ctx, reject)?;
                    let end = self.here();
                    self.patch(jump, end);
                }
                ctx.depth -= 1;
            }
            S::If { condition, accept, reject } => {
                let c = self.scalar_of(ctx, *condition)?;
                let saved = self.mask();
                self.emit(Inst::SaveExec { m: saved });
                self.emit(Inst::AndCond { c });
                let skip = self.emit(Inst::JumpIfNone { to: 0 });
                ctx.depth += 1;
                ctx.div += 1;
                self.block(ctx, accept)?;
                let after_accept = self.here();
                self.patch(skip, after_accept);
                if !reject.is_empty() {
                    self.emit(Inst::ElseOf { m: saved, c });
                    let skip = self.emit(Inst::JumpIfNone { to: 0 });
                    self.block(ctx, reject)?;
                    let end = self.here();
                    self.patch(skip, end);
                }
                ctx.depth -= 1;
                ctx.div -= 1;
                self.join(ctx, saved);
            }
            S::Loop { body, continuing, break_if } => {
                let brk = self.mask();
                let cont = self.mask();
                self.emit(Inst::ClearMask { m: brk });
                let top = self.here();
                ctx.depth += 1;
                let key = body as *const naga::Block as usize;
                let divergent = self.facts.divergent_loops.contains(&key);
                ctx.div += divergent as u32;
                ctx.loops.push(LoopCtx { brk, cont, body_depth: ctx.depth, to_continuing: Vec::new(), key, div: ctx.div });
                self.block(ctx, body)?;
                let continuing_at = self.here();
                for jump in std::mem::take(&mut ctx.loops.last_mut().expect("loop").to_continuing) {
                    self.patch(jump, continuing_at);
                }
                self.emit(Inst::Rejoin { m: cont });
                self.block(ctx, continuing)?;
                if let Some(c) = break_if {
                    let c = self.scalar_of(ctx, *c)?;
                    if c & SCALAR == 0 {
                        self.found.divergent_loops.insert(key);
                    }
                    self.emit(Inst::BreakIf { m: brk, c });
                }
                ctx.depth -= 1;
                ctx.div -= divergent as u32;
                ctx.loops.pop();
                self.emit(Inst::JumpIfAny { to: top });
                self.emit(Inst::ExecFrom { m: brk });
            }
            S::Break => {
                let l = ctx.loops.last().expect("break outside a loop");
                let brk = l.brk;
                if ctx.div > l.div {
                    self.found.divergent_loops.insert(l.key);
                }
                self.emit(Inst::Leave { m: brk });
            }
            S::Continue => {
                let l = ctx.loops.last().expect("continue outside a loop");
                let cont = l.cont;
                if ctx.div > l.div {
                    self.found.divergent_loops.insert(l.key);
                }
                self.emit(Inst::Leave { m: cont });
            }
            S::Return { value } if ctx.tail_return_only => {
                // The callee's last statement: its value becomes the call's result as is.
                ctx.result = match value {
                    Some(v) => Some(self.regs_of(ctx, *v)?),
                    None => None,
                };
            }
            S::Return { value } => {
                if let Some(v) = value {
                    let regs = self.regs_of(ctx, *v)?;
                    let result = ctx.result.clone().expect("callee has a result");
                    for (&d, &s) in result.iter().zip(&regs) {
                        self.emit(Inst::MovMasked { d, s });
                    }
                }
                if ctx.is_entry && ctx.depth == 0 {
                    self.emit(Inst::Halt);
                } else {
                    self.emit(Inst::Leave { m: ctx.ret });
                }
            }
            S::Store { pointer, value } => {
                let Val::Ptr(ptr) = self.val(ctx, *pointer)? else { return self.unsupported("store through a non-pointer") };
                let ty = self.pointee(ctx, *pointer)?;
                let v = self.regs_of(ctx, *value)?;
                let direct = matches!(ctx.func.expressions[*pointer], E::LocalVariable(_));
                self.store(&ptr, &ty, &v, direct, ctx.div)?;
            }
            S::Call { function, arguments, result } => {
                let mut args = Vec::new();
                for &a in arguments {
                    args.push(self.val(ctx, a)?);
                }
                let callee = &self.module.functions[*function];
                let info = self.info;
                if let Some(result_regs) = self.try_inline_select(ctx, callee, &info[*function], &args)? {
                    if let Some(h) = result {
                        ctx.values.insert(*h, Val::Regs(result_regs));
                    }
                    return Ok(());
                }
                if returns_only_at_end(&callee.body) {
                    // No early return: the exec mask needs no saving, the result no copy.
                    let mut inner = FnCtx {
                        func: callee,
                        finfo: &info[*function],
                        values: HashMap::new(),
                        locals: HashMap::new(),
                        args,
                        ret: NO_MASK,
                        result: None,
                        loops: Vec::new(),
                        is_entry: false,
                        depth: 0,
                        tail_return_only: true,
                        div: 0,
                    };
                    let span = self.span;
                    self.function_body(&mut inner)?;
                    self.span = span;
                    if let (Some(h), Some(regs)) = (result, inner.result) {
                        ctx.values.insert(*h, Val::Regs(regs));
                    }
                    return Ok(());
                }
                let result_regs = match &callee.result {
                    Some(r) => Some(self.regs(self.flat_len(&self.module.types[r.ty].inner)?)),
                    None => None,
                };
                let saved = self.mask();
                let ret = self.mask();
                self.emit(Inst::SaveExec { m: saved });
                self.emit(Inst::ClearMask { m: ret });
                let mut inner = FnCtx {
                    func: callee,
                    finfo: &info[*function],
                    values: HashMap::new(),
                    locals: HashMap::new(),
                    args,
                    ret,
                    result: result_regs.clone(),
                    loops: Vec::new(),
                    is_entry: false,
                    depth: 0,
                    tail_return_only: false,
                    div: 0,
                };
                let span = self.span;
                self.function_body(&mut inner)?;
                self.span = span;
                self.emit(Inst::ExecFrom { m: saved });
                if let (Some(h), Some(regs)) = (result, result_regs) {
                    ctx.values.insert(*h, Val::Regs(regs));
                }
            }
            S::ControlBarrier(_) => {
                self.emit(Inst::Barrier);
            }
            S::CooperativeStore { target, data } => {
                let matrix = self.inner_of(ctx, *target).clone();
                let regs = self.regs_of(ctx, *target)?;
                let (space, addr, off, stride) = self.coop_data(ctx, &matrix, data)?;
                let s = self.table(&regs);
                self.emit(Inst::CoopStore { s, space, addr, off, stride, row_major: data.row_major });
            }
            // Warps of a workgroup run on one worker, so memory is coherent between them.
            S::MemoryBarrier(_) => {}
            S::WorkGroupUniformLoad { pointer, result } => {
                let Val::Ptr(ptr) = self.val(ctx, *pointer)? else { return self.unsupported("load through a non-pointer") };
                let ty = self.pointee(ctx, *pointer)?;
                self.emit(Inst::Barrier);
                let regs = self.load(&ptr, &ty)?;
                self.emit(Inst::Barrier);
                ctx.values.insert(*result, Val::Regs(regs));
            }
            S::Atomic { pointer, fun, value, result } => {
                let Val::Ptr(ptr) = self.val(ctx, *pointer)? else { return self.unsupported("atomic on a non-pointer") };
                let kind = self.kind_of(ctx, *value)?;
                let v = self.scalar_of(ctx, *value)?;
                let space = match ptr.root {
                    Root::Storage(b) => AtomicSpace::Storage(b),
                    Root::Shared => AtomicSpace::Workgroup,
                    _ => return self.unsupported("atomics outside storage and workgroup memory"),
                };
                use naga::AtomicFunction as A;
                let (op, cmp) = match fun {
                    A::Add => (AtomicOp::Add, ZERO),
                    A::Subtract => (AtomicOp::Sub, ZERO),
                    A::And => (AtomicOp::And, ZERO),
                    A::InclusiveOr => (AtomicOp::Or, ZERO),
                    A::ExclusiveOr => (AtomicOp::Xor, ZERO),
                    A::Min => (if kind == ScalarKind::Sint { AtomicOp::SMin } else { AtomicOp::UMin }, ZERO),
                    A::Max => (if kind == ScalarKind::Sint { AtomicOp::SMax } else { AtomicOp::UMax }, ZERO),
                    A::Exchange { compare: None } => (AtomicOp::Exchange, ZERO),
                    A::Exchange { compare: Some(c) } => (AtomicOp::CompareExchange, self.scalar_of(ctx, *c)?),
                };
                let d = self.reg();
                self.emit(Inst::Atomic { op, space, d, addr: ptr.dynamic.unwrap_or(ZERO), off: ptr.off, v, cmp });
                if let Some(h) = result {
                    let regs = if op == AtomicOp::CompareExchange { vec![d, self.bin(BinOp::IEq, d, cmp)] } else { vec![d] };
                    ctx.values.insert(*h, Val::Regs(regs));
                }
            }
            other => return self.unsupported(format!("statement {}", statement_name(other))),
        }
        Ok(())
    }
}

/// Identity of a function of the module (its key in `UniformFacts`).
fn fn_key(f: &Function) -> usize {
    f as *const Function as usize
}

/// Tag of scalar registers while lowering (stripped in the emitted scalar instructions).
const SCALAR: Reg = 1 << 31;

fn commutes(op: BinOp) -> bool {
    use BinOp::*;
    matches!(op, IAdd | IMul | FAdd | FMul | And | Or | Xor | IEq | INe | FEq | FNe | UMin | UMax | SMin | SMax | FMin | FMax)
}

/// True when `body` has no `return` but (possibly) its last statement.
fn returns_only_at_end(body: &naga::Block) -> bool {
    let n = body.len();
    body.iter().enumerate().all(|(i, stmt)| match stmt {
        S::Return { .. } => i + 1 == n,
        other => !contains_return(other),
    })
}

fn contains_return(stmt: &S) -> bool {
    let any = |b: &naga::Block| b.iter().any(contains_return);
    match stmt {
        S::Return { .. } => true,
        S::Block(b) => any(b),
        S::If { accept, reject, .. } => any(accept) || any(reject),
        S::Loop { body, continuing, .. } => any(body) || any(continuing),
        S::Switch { cases, .. } => cases.iter().any(|c| any(&c.body)),
        _ => false,
    }
}

/// Expressions a block of only `Emit`s evaluates, or None if it holds anything else.
fn emitted_expressions(stmts: &[S]) -> Option<usize> {
    stmts.iter().try_fold(0, |n, s| match s {
        S::Emit(r) => Some(n + r.clone().count()),
        _ => None,
    })
}

/// A block of `Emit`s followed by stores to function variables at constant components:
/// (the emits, the stores, expressions evaluated).
fn split_emits_stores<'b>(func: &Function, b: &'b naga::Block) -> Option<(&'b [S], &'b [S], usize)> {
    let first_store = b.iter().position(|s| !matches!(s, S::Emit(_))).unwrap_or(b.len());
    let (emits, stores) = b.split_at(first_store);
    let stores_ok = stores.iter().all(|s| matches!(s, S::Store { pointer, .. } if static_local(func, *pointer)));
    if !stores_ok {
        return None;
    }
    Some((emits, stores, emitted_expressions(emits)?))
}

/// A pointer into a function variable at a constant component (no dynamic index).
fn static_local(func: &Function, h: Handle<naga::Expression>) -> bool {
    match func.expressions[h] {
        E::LocalVariable(_) => true,
        E::AccessIndex { base, .. } => static_local(func, base),
        _ => false,
    }
}

fn statement_name(s: &S) -> String {
    let text = format!("{s:?}");
    text.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("?").to_string()
}
