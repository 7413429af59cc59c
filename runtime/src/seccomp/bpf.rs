//! A tiny classic-BPF assembler with forward labels, enough to lay out a
//! seccomp filter: the per-rule argument checks come from seccompiler, the
//! dispatch on architecture and syscall number around them is built here.
//!
//! Conditional jumps are only ever emitted with offsets 0 or 1 (their
//! 8-bit offsets cannot reach far); anything further goes through an
//! unconditional `ja` to a [`Label`], whose 32-bit offset is resolved at the
//! end.

use seccompiler::sock_filter;

// Opcodes (linux/bpf_common.h).
// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
pub(super) const BPF_LD_W_ABS: u16 = 0x20;
#[cfg(test)] // emitted by seccompiler's rules, read by the test interpreter
pub(super) const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
pub(super) const BPF_JMP_JA: u16 = 0x05;
pub(super) const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
pub(super) const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
pub(super) const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
pub(super) const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
pub(super) const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
pub(super) const DATA_NR: u32 = 0;
pub(super) const DATA_ARCH: u32 = 4;

/// The kernel's limit on the length of a filter (BPF_MAXINSNS).
pub(super) const MAX_INSNS: usize = 4096;

/// A jump target, defined once with [`Asm::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Label(usize);

enum Item {
    Insn(sock_filter),
    /// `ja` to a label.
    Jump(Label),
    /// Where a label points (takes no space).
    Here(Label),
}

#[derive(Default)]
pub(super) struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    pub(super) fn new_label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Define `label` at the current position.
    pub(super) fn label(&mut self, label: Label) {
        self.items.push(Item::Here(label));
    }

    pub(super) fn insn(&mut self, code: u16, k: u32, jt: u8, jf: u8) {
        self.items.push(Item::Insn(sock_filter { code, jt, jf, k }));
    }

    pub(super) fn load(&mut self, offset: u32) {
        self.insn(BPF_LD_W_ABS, offset, 0, 0);
    }

    pub(super) fn ret(&mut self, value: u32) {
        self.insn(BPF_RET_K, value, 0, 0);
    }

    pub(super) fn jump(&mut self, to: Label) {
        self.items.push(Item::Jump(to));
    }

    /// If `code` (a `jmp ... k` comparison of the accumulator with `k`)
    /// holds, go to `to`; otherwise fall through.
    pub(super) fn jump_if(&mut self, code: u16, k: u32, to: Label) {
        // true: fall into the `ja`; false: skip it.
        self.insn(code, k, 0, 1);
        self.jump(to);
    }

    /// Append already-assembled, position-independent code.
    pub(super) fn extend(&mut self, code: Vec<sock_filter>) {
        self.items.extend(code.into_iter().map(Item::Insn));
    }

    /// Resolve the labels. Every jump must go forward to a defined label
    /// (the assembler is only used that way; anything else is a bug here).
    pub(super) fn finish(self) -> Vec<sock_filter> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pos = 0;
        for item in &self.items {
            match item {
                Item::Here(l) => at[l.0] = pos,
                Item::Insn(_) | Item::Jump(_) => pos += 1,
            }
        }
        let mut out = Vec::with_capacity(pos);
        for item in self.items {
            match item {
                Item::Here(_) => {}
                Item::Insn(i) => out.push(i),
                Item::Jump(l) => {
                    let target = at[l.0];
                    let next = out.len() + 1;
                    assert!(
                        target != usize::MAX && target >= next,
                        "seccomp bpf: jump to an undefined or earlier label"
                    );
                    out.push(sock_filter {
                        code: BPF_JMP_JA,
                        jt: 0,
                        jf: 0,
                        k: (target - next) as u32,
                    });
                }
            }
        }
        out
    }
}

/// The checks the kernel makes before accepting a seccomp filter
/// (bpf_check_classic and seccomp_check_filter), for the opcodes used here.
#[cfg(test)]
pub(super) fn check(prog: &[sock_filter]) -> Result<(), String> {
    if prog.is_empty() || prog.len() > MAX_INSNS {
        return Err(format!("length {}", prog.len()));
    }
    for (pc, i) in prog.iter().enumerate() {
        let next = pc + 1;
        let in_range = |off: usize| next + off < prog.len();
        match i.code {
            BPF_LD_W_ABS if i.k % 4 == 0 && i.k < 64 => {}
            BPF_ALU_AND_K | BPF_RET_K => {}
            BPF_JMP_JA if in_range(i.k as usize) => {}
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K | BPF_JMP_JSET_K
                if in_range(i.jt as usize) && in_range(i.jf as usize) => {}
            _ => return Err(format!("instruction {pc}: {i:?}")),
        }
    }
    match prog.last() {
        Some(i) if i.code == BPF_RET_K => Ok(()),
        _ => Err("does not end with ret".into()),
    }
}

/// Run a seccomp filter the way the kernel does, on a `seccomp_data` made
/// of `nr`, `arch` and `args` (for tests of the compiled filters).
#[cfg(test)]
pub(super) fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        // seccomp_data is native-endian; these tests run on little-endian.
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = &prog[pc];
        pc += 1;
        let jump = |cond: bool| if cond { i.jt as usize } else { i.jf as usize };
        match i.code {
            BPF_LD_W_ABS => {
                assert_eq!(i.k % 4, 0);
                acc = data[i.k as usize / 4];
            }
            BPF_ALU_AND_K => acc &= i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JMP_JEQ_K => pc += jump(acc == i.k),
            BPF_JMP_JGT_K => pc += jump(acc > i.k),
            BPF_JMP_JGE_K => pc += jump(acc >= i.k),
            BPF_JMP_JSET_K => pc += jump(acc & i.k != 0),
            BPF_RET_K => return i.k,
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
    }
}
