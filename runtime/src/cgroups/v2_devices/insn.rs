//! A small eBPF assembler: the few instructions the device filter needs,
//! each built by a named constructor, and forward jumps to labels that
//! are resolved into offsets when the program is finished.

// Instruction classes.
const CLASS_LDX: u8 = 0x01;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
// Load size and mode.
const SIZE_W: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
// Operand source: the immediate.
const SRC_IMM: u8 = 0x00;
// ALU operations.
const ALU_AND: u8 = 0x50;
const ALU_RSH: u8 = 0x70;
const ALU_MOV: u8 = 0xb0;
// Jump operations.
const JMP_JEQ: u8 = 0x10;
const JMP_JSET: u8 = 0x40;
const JMP_JNE: u8 = 0x50;
const JMP_EXIT: u8 = 0x90;

/// An eBPF register (r0 holds the return value, r1 the context on entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reg(u8);

impl Reg {
    pub(crate) const R0: Reg = Reg(0);
    pub(crate) const R1: Reg = Reg(1);
    pub(crate) const R2: Reg = Reg(2);
    pub(crate) const R3: Reg = Reg(3);
    pub(crate) const R4: Reg = Reg(4);
    pub(crate) const R5: Reg = Reg(5);
}

/// One eBPF instruction, as the fields of the kernel's `struct bpf_insn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Self {
        Self {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)`
    pub(crate) fn load_u32(dst: Reg, src: Reg, off: i16) -> Self {
        Self::new(CLASS_LDX | SIZE_W | MODE_MEM, dst, src, off, 0)
    }

    /// `dst = imm` (64-bit).
    pub(crate) fn mov_imm(dst: Reg, imm: i32) -> Self {
        Self::new(CLASS_ALU64 | ALU_MOV | SRC_IMM, dst, Reg::R0, 0, imm)
    }

    /// `dst = src` (64-bit).
    pub(crate) fn mov_reg(dst: Reg, src: Reg) -> Self {
        const SRC_REG: u8 = 0x08;
        Self::new(CLASS_ALU64 | ALU_MOV | SRC_REG, dst, src, 0, 0)
    }

    /// `dst &= imm` (64-bit; `imm` is sign-extended).
    pub(crate) fn and_imm(dst: Reg, imm: i32) -> Self {
        Self::new(CLASS_ALU64 | ALU_AND | SRC_IMM, dst, Reg::R0, 0, imm)
    }

    /// `dst >>= imm` (64-bit, logical).
    pub(crate) fn rsh_imm(dst: Reg, imm: i32) -> Self {
        Self::new(CLASS_ALU64 | ALU_RSH | SRC_IMM, dst, Reg::R0, 0, imm)
    }

    /// Return r0 to the kernel.
    pub(crate) fn exit() -> Self {
        Self::new(CLASS_JMP | JMP_EXIT, Reg::R0, Reg::R0, 0, 0)
    }

    /// The 8 bytes of this instruction in the kernel's layout (host byte
    /// order, destination register in the low nibble).
    pub fn to_bytes(self) -> [u8; 8] {
        let [o0, o1] = self.off.to_ne_bytes();
        let [i0, i1, i2, i3] = self.imm.to_ne_bytes();
        let regs = if cfg!(target_endian = "little") {
            (self.src << 4) | self.dst
        } else {
            (self.dst << 4) | self.src
        };
        [self.code, regs, o0, o1, i0, i1, i2, i3]
    }
}

/// A condition under which [`Assembler::jump`] jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    /// `reg == imm` (64-bit compare, `imm` sign-extended).
    Eq(Reg, i32),
    /// `reg != imm` (64-bit compare, `imm` sign-extended).
    Ne(Reg, i32),
    /// `(u32)reg != (u32)imm`: exact for every 32-bit value.
    Ne32(Reg, u32),
    /// `reg & imm != 0`.
    AnySet(Reg, i32),
}

impl Cond {
    /// The jump instruction with offset 0 (patched once labels are bound).
    fn insn(self) -> Insn {
        match self {
            Cond::Eq(r, imm) => Insn::new(CLASS_JMP | JMP_JEQ | SRC_IMM, r, Reg::R0, 0, imm),
            Cond::Ne(r, imm) => Insn::new(CLASS_JMP | JMP_JNE | SRC_IMM, r, Reg::R0, 0, imm),
            Cond::Ne32(r, imm) => Insn::new(
                CLASS_JMP32 | JMP_JNE | SRC_IMM,
                r,
                Reg::R0,
                0,
                // Same 32 bits: the kernel compares the low halves.
                i32::from_ne_bytes(imm.to_ne_bytes()),
            ),
            Cond::AnySet(r, imm) => Insn::new(CLASS_JMP | JMP_JSET | SRC_IMM, r, Reg::R0, 0, imm),
        }
    }
}

/// A position in the program, bound once with [`Assembler::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Label(usize);

/// The program is too long for a jump to reach its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JumpTooFar {
    /// Distance in instructions.
    pub(crate) distance: usize,
}

/// Builds a program: instructions, and jumps to labels bound later.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    insns: Vec<Insn>,
    /// Instruction index each label is bound to.
    labels: Vec<Option<usize>>,
    /// (index of a jump instruction, its target).
    jumps: Vec<(usize, Label)>,
}

impl Assembler {
    /// A label to jump to, not yet bound to a position.
    pub(crate) fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `label` to the next instruction emitted. Jumps may only go
    /// forward, so every jump to `label` must already be emitted.
    pub(crate) fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    /// Append an instruction.
    pub(crate) fn emit(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    /// Append a jump to `target` taken when `cond` holds.
    pub(crate) fn jump(&mut self, cond: Cond, target: Label) {
        self.jumps.push((self.insns.len(), target));
        self.insns.push(cond.insn());
    }

    /// The finished instructions, with every jump offset filled in.
    ///
    /// Panics if a jump's label was never bound or is behind it: that is a
    /// bug in the code generator, not something input can cause.
    pub(crate) fn finish(mut self) -> Result<Vec<Insn>, JumpTooFar> {
        for &(at, label) in &self.jumps {
            let target = self.labels[label.0].expect("every jump target is bound");
            assert!(target > at, "only forward jumps are emitted");
            let distance = target - at - 1;
            self.insns[at].off = i16::try_from(distance).map_err(|_| JumpTooFar { distance })?;
        }
        Ok(self.insns)
    }
}
