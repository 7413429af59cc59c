//! Seccomp: compiling `linux.seccomp` of `config.json` into a BPF filter and
//! installing it.
//!
//! [`compile`] has no side effects and runs at `create` time, before the
//! container's init is cloned, so a bad profile fails `create` cleanly; the
//! child inherits the compiled [`Filter`] with its copy of the address space
//! and calls [`Filter::install`] just before `execve`.
//!
//! # Semantics (those of runc 1.1 with libseccomp)
//!
//! - `defaultAction`/`action`: `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO` (the errno
//!   is `errnoRet`/`defaultErrnoRet`, default `EPERM`), `SCMP_ACT_KILL` (=
//!   `SCMP_ACT_KILL_THREAD`), `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_TRAP`,
//!   `SCMP_ACT_LOG`, `SCMP_ACT_TRACE` (`errnoRet`, default `EPERM`, is the
//!   value handed to the tracer). `errnoRet` on any other action is an
//!   error.
//! - `SCMP_ACT_NOTIFY` (seccomp user notification, `SECCOMP_RET_USER_NOTIF`)
//!   is accepted in `syscalls[].action` only, and only with a non-empty
//!   `listenerPath` (the agent's unix socket, see [`notify`]); like runc, it
//!   is refused as `defaultAction` and on `write` (as runc, whose sync
//!   writes would hang) and `sendmsg` (it hands the listener fd to the
//!   agent: notified, it would wait for an agent that never got the fd).
//! - A rule whose action equals the default action is dropped (it could
//!   not change anything).
//! - A syscall name this architecture does not have is skipped (debug
//!   log), never an error: profiles list syscalls of every architecture.
//! - `args` of one `syscalls[]` entry are ANDed, compared on 64 bits
//!   (on 32 bits for the 32-bit ABIs x86 and x32, like libseccomp).
//!   When several of them name the same argument index, the entry is
//!   instead split into one rule per condition, ORed (what runc does).
//!   `SCMP_CMP_MASKED_EQ` matches when `(arg & value) == valueTwo`.
//! - When several entries name the same syscall, the entries with `args`
//!   are tried first, in the order of `config.json`, then the first entry
//!   without `args`; the first match decides, otherwise the default action.
//! - The filter starts with an architecture check. The native architecture
//!   is always filtered. Listed architectures that the kernel can run next
//!   to it (`SCMP_ARCH_X86` and `SCMP_ARCH_X32` on x86_64) get their own
//!   section with their own syscall numbers; other listed architectures are
//!   accepted and ignored (this kernel never runs them). A syscall from an
//!   architecture that is not filtered (e.g. `int 0x80` on x86_64 when
//!   `SCMP_ARCH_X86` is not listed, or any x32 syscall when `SCMP_ARCH_X32`
//!   is not) kills the process (`SECCOMP_RET_KILL_PROCESS`); libseccomp's
//!   default for that case kills the thread.
//! - Like runc's "-ENOSYS stub": unless the default action lets syscalls
//!   through (`ALLOW`, `LOG`, `TRACE`) or already returns `ENOSYS`, a syscall
//!   numbered above every syscall the profile names (for that architecture)
//!   fails with `ENOSYS` instead of the default action, so that programs
//!   fall back from syscalls newer than the profile (e.g. `clone3`).
//! - `flags`: `SECCOMP_FILTER_FLAG_TSYNC`, `..._LOG` and `..._SPEC_ALLOW`
//!   are passed to seccomp(2); `..._WAIT_KILLABLE_RECV` is refused.
//!
//! # Installing, `no_new_privs` and capabilities
//!
//! [`Filter::install`] loads the program with seccomp(2) and does not touch
//! `no_new_privs`, so the caller orders it as runc does: with
//! `noNewPrivileges: true`, set no_new_privs and install last, right before
//! `execve`; otherwise install while still holding CAP_SYS_ADMIN, before
//! dropping capabilities and switching uid/gid (the profile must then allow
//! those syscalls, and `execve`, as Docker's default profile does).

mod bpf;
mod error;
pub mod notify;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompRule,
};

pub use error::Error;

use bpf::{Asm, Label};

/// `SECCOMP_FILTER_FLAG_TSYNC`.
const FLAG_TSYNC: u32 = 1;
/// `SECCOMP_FILTER_FLAG_LOG`: log every action but ALLOW.
const FLAG_LOG: u32 = 2;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: keep speculative store bypass enabled.
const FLAG_SPEC_ALLOW: u32 = 4;
/// Largest errno the kernel returns for `SECCOMP_RET_ERRNO` (MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;
/// `x32` syscalls are the x86_64 ones with this bit set (__X32_SYSCALL_BIT).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `SECCOMP_RET_USER_NOTIF`: `SCMP_ACT_NOTIFY`.
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: seccomp(2) returns a listener fd.
const FLAG_NEW_LISTENER: u32 = 1 << 3;
/// Syscalls `SCMP_ACT_NOTIFY` may not apply to, and why.
const NOT_NOTIFIABLE: &[(&str, &str)] = &[
    (
        "sendmsg",
        "it hands the listener to the agent, which cannot answer before it has it",
    ),
    // runc's own reason: it sends the listener to its parent with write.
    // berth does not, but refuses it too, so profiles behave the same.
    ("write", "refused as by runc"),
];

/// A compiled filter, ready to install.
#[derive(Clone)]
pub struct Filter {
    program: BpfProgram,
    flags: u32,
    /// With `SCMP_ACT_NOTIFY` rules: where the listener fd goes.
    listener: Option<Listener>,
}

/// `linux.seccomp.listenerPath` and `listenerMetadata`, for a filter with
/// `SCMP_ACT_NOTIFY` rules.
#[derive(Clone, Debug)]
pub struct Listener {
    /// The agent's unix socket (a path on the host).
    pub path: PathBuf,
    /// Opaque to the runtime, passed on to the agent.
    pub metadata: String,
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("listener", &self.listener)
            .finish()
    }
}

impl Filter {
    /// Install the filter on the calling thread (on all threads with
    /// `SECCOMP_FILTER_FLAG_TSYNC`), with seccomp(2) and the flags asked.
    ///
    /// It does not set `no_new_privs`: the caller has either set it (then
    /// installs last, right before exec) or holds CAP_SYS_ADMIN (then
    /// installs before dropping capabilities, as runc does, and the profile
    /// must allow what the runtime does after). It neither allocates nor
    /// logs, so it may run in a forked child.
    ///
    /// A filter with `SCMP_ACT_NOTIFY` rules is installed with
    /// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and its listener fd returned, to
    /// be handed to the agent (see [`notify`]); otherwise `None`.
    pub fn install(&self) -> Result<Option<OwnedFd>, Error> {
        let flags = if self.needs_listener() {
            self.flags | FLAG_NEW_LISTENER
        } else {
            self.flags
        };
        crate::sys::seccomp_set_filter(self.program.as_slice(), flags)
            .map_err(|e| Error::Install(format!("seccomp(SECCOMP_SET_MODE_FILTER): {e}")))
    }

    /// Whether the filter has `SCMP_ACT_NOTIFY` rules, so that installing
    /// it yields a listener fd for the agent at [`Filter::listener`].
    pub fn needs_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// The agent's socket and metadata, when [`Filter::needs_listener`].
    pub fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }

    /// The BPF program.
    pub fn program(&self) -> &[sock_filter] {
        &self.program
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits requested by `linux.seccomp.flags`.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// Actions accepted in `defaultAction` and `syscalls[].action`, sorted.
pub fn supported_actions() -> &'static [&'static str] {
    &[
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ]
}

/// Operators accepted in `syscalls[].args[].op`, sorted.
pub fn supported_operators() -> &'static [&'static str] {
    &[
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_LE",
        "SCMP_CMP_LT",
        "SCMP_CMP_MASKED_EQ",
        "SCMP_CMP_NE",
    ]
}

/// Architectures whose syscalls the filter actually checks on this host
/// (native first, then the compatible ABIs that get their own section).
/// Every other architecture is accepted in `architectures` and ignored.
pub fn supported_archs() -> &'static [&'static str] {
    NATIVE.supported_archs
}

/// Flags accepted in `linux.seccomp.flags`.
pub fn supported_flags() -> &'static [&'static str] {
    &[
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
    ]
}

/// Compile `linux.seccomp` for the running architecture.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter, Error> {
    compile_for(seccomp, &NATIVE)
}

/// One syscall ABI: its table and how its syscalls are seen by the filter.
#[derive(Debug)]
struct Abi {
    /// `SCMP_ARCH_*` name.
    name: &'static str,
    /// The `AUDIT_ARCH_*` value in `seccomp_data.arch`.
    audit: u32,
    /// Name -> number.
    table: &'static [(&'static str, u32)],
    /// Added to the table's numbers (x32's __X32_SYSCALL_BIT).
    nr_bias: u32,
    /// Compare arguments on 64 bits (else on their low 32 bits).
    wide_args: bool,
}

impl Abi {
    fn lookup(&self, name: &str) -> Option<u32> {
        self.table
            .binary_search_by(|(n, _)| n.cmp(&name))
            .ok()
            .map(|i| self.table[i].1 + self.nr_bias)
    }
}

/// What a host can run and how the filter tells ABIs apart.
#[derive(Debug)]
struct Target {
    native: Abi,
    /// OCI names of the native architecture.
    native_archs: &'static [Arch],
    /// An ABI sharing the native audit value, its syscalls told apart by
    /// X32_SYSCALL_BIT in the number (x32 on x86_64).
    x32: Option<(Arch, Abi)>,
    /// ABIs with their own audit value that this kernel can also run.
    compat: &'static [(Arch, Abi)],
    supported_archs: &'static [&'static str],
}

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const X86_64_TARGET: Target = Target {
    native: Abi {
        name: "SCMP_ARCH_X86_64",
        audit: AUDIT_ARCH_X86_64,
        table: table::X86_64,
        nr_bias: 0,
        wide_args: true,
    },
    native_archs: &[Arch::ScmpArchNative, Arch::ScmpArchX86_64],
    x32: Some((
        Arch::ScmpArchX32,
        Abi {
            name: "SCMP_ARCH_X32",
            audit: AUDIT_ARCH_X86_64,
            table: table::X32,
            nr_bias: X32_SYSCALL_BIT,
            wide_args: false,
        },
    )),
    compat: &[(
        Arch::ScmpArchX86,
        Abi {
            name: "SCMP_ARCH_X86",
            audit: AUDIT_ARCH_I386,
            table: table::X86,
            nr_bias: 0,
            wide_args: false,
        },
    )],
    supported_archs: &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
};

/// aarch64 kernels may also run 32-bit ARM programs; there is no ARM table
/// here, so with or without `SCMP_ARCH_ARM` listed their syscalls hit the
/// architecture check and kill the process.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const AARCH64_TARGET: Target = Target {
    native: Abi {
        name: "SCMP_ARCH_AARCH64",
        audit: AUDIT_ARCH_AARCH64,
        table: table::AARCH64,
        nr_bias: 0,
        wide_args: true,
    },
    native_archs: &[Arch::ScmpArchNative, Arch::ScmpArchAarch64],
    x32: None,
    compat: &[],
    supported_archs: &["SCMP_ARCH_AARCH64"],
};

#[cfg(target_arch = "x86_64")]
const NATIVE: Target = X86_64_TARGET;
#[cfg(target_arch = "aarch64")]
const NATIVE: Target = AARCH64_TARGET;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("berth's seccomp module has syscall tables for x86_64 and aarch64 only");

/// One condition, validated.
#[derive(Clone, Debug)]
struct Cond {
    index: u8,
    op: SeccompCmpOp,
    value: u64,
}

/// One `syscalls[]` entry, validated.
#[derive(Debug)]
struct Entry {
    /// Position in `syscalls[]`, for messages.
    pos: usize,
    names: Vec<String>,
    action: Action,
    /// ORed rules, each an AND of conditions; empty: unconditional.
    rules: Vec<Vec<Cond>>,
}

/// An action: one seccompiler knows, or `SCMP_ACT_NOTIFY` (it does not).
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Plain(SeccompAction),
    Notify,
}

impl Action {
    /// The `SECCOMP_RET_*` value.
    fn ret(&self) -> u32 {
        match self {
            Action::Plain(a) => u32::from(a.clone()),
            Action::Notify => RET_USER_NOTIF,
        }
    }
}

/// Map an action and its errno field (`errno_field` is the JSON path of
/// its errnoRet).
fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: &str,
) -> Result<Action, Error> {
    let no_errno = |act: Action| match errno_ret {
        None => Ok(act),
        Some(_) => Err(Error::invalid(
            errno_field,
            format!("only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {action}"),
        )),
    };
    let plain = |act: SeccompAction| no_errno(Action::Plain(act));
    match action {
        LinuxSeccompAction::ScmpActAllow => plain(SeccompAction::Allow),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            plain(SeccompAction::KillThread)
        }
        LinuxSeccompAction::ScmpActKillProcess => plain(SeccompAction::KillProcess),
        LinuxSeccompAction::ScmpActTrap => plain(SeccompAction::Trap),
        LinuxSeccompAction::ScmpActLog => plain(SeccompAction::Log),
        LinuxSeccompAction::ScmpActErrno => {
            let errno = errno_ret.unwrap_or(libc::EPERM as u32);
            if errno > MAX_ERRNO {
                return Err(Error::invalid(
                    errno_field,
                    format!("{errno} is not an errno (at most {MAX_ERRNO})"),
                ));
            }
            Ok(Action::Plain(SeccompAction::Errno(errno)))
        }
        LinuxSeccompAction::ScmpActTrace => {
            let msg = errno_ret.unwrap_or(libc::EPERM as u32);
            if msg > 0xffff {
                return Err(Error::invalid(
                    errno_field,
                    format!("{msg} does not fit the 16 bits handed to the tracer"),
                ));
            }
            Ok(Action::Plain(SeccompAction::Trace(msg)))
        }
        LinuxSeccompAction::ScmpActNotify => no_errno(Action::Notify),
    }
}

fn condition(arg: &LinuxSeccompArg, field: &str) -> Result<Cond, Error> {
    let index = match u8::try_from(arg.index()) {
        Ok(i) if i <= 5 => i,
        _ => {
            return Err(Error::invalid(
                format!("{field}.index"),
                format!("{} is not a syscall argument index (0 to 5)", arg.index()),
            ))
        }
    };
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // (arg & value) == valueTwo
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(Cond { index, op, value })
}

fn entries(seccomp: &LinuxSeccomp) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    for (pos, call) in seccomp.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{pos}]");
        if call.names().is_empty() {
            return Err(Error::invalid(
                format!("{field}.names"),
                "must name at least one syscall",
            ));
        }
        for (i, name) in call.names().iter().enumerate() {
            if name.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.names[{i}]"),
                    "empty syscall name",
                ));
            }
        }
        let act = action(
            call.action(),
            call.errno_ret(),
            &format!("{field}.errnoRet"),
        )?;
        if act == Action::Notify {
            let refused = call.names().iter().enumerate().find_map(|(i, n)| {
                let (_, why) = NOT_NOTIFIABLE.iter().find(|(no, _)| no == n)?;
                Some((i, n, why))
            });
            if let Some((i, name, why)) = refused {
                return Err(Error::invalid(
                    format!("{field}.names[{i}]"),
                    format!("SCMP_ACT_NOTIFY cannot be used for the {name} syscall ({why})"),
                ));
            }
        }
        let conds = call
            .args()
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, arg)| condition(arg, &format!("{field}.args[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = [false; 6];
        let repeated = conds
            .iter()
            .any(|c| std::mem::replace(&mut seen[c.index as usize], true));
        let rules = if conds.is_empty() {
            Vec::new()
        } else if repeated {
            // runc: conditions on the same argument become separate rules.
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        out.push(Entry {
            pos,
            names: call.names().clone(),
            action: act,
            rules,
        });
    }
    Ok(out)
}

/// Whether a condition can ever hold: `MASKED_EQ` with `valueTwo` bits
/// outside the mask cannot (seccompiler would mask `valueTwo` and match).
fn satisfiable(c: &Cond, wide: bool) -> bool {
    match c.op {
        SeccompCmpOp::MaskedEq(mask) => {
            let width = if wide { u64::MAX } else { u64::from(u32::MAX) };
            c.value & !mask & width == 0
        }
        _ => true,
    }
}

/// The rules of one syscall in one ABI.
#[derive(Default)]
struct Syscall {
    conditional: Vec<(SeccompRule, u32)>,
    unconditional: Option<u32>,
}

/// Rules per syscall number of one ABI, and the highest number named.
fn section(
    abi: &Abi,
    entries: &[Entry],
    default: u32,
) -> Result<(BTreeMap<u32, Syscall>, Option<u32>), Error> {
    let len = if abi.wide_args {
        SeccompCmpArgLen::Qword
    } else {
        SeccompCmpArgLen::Dword
    };
    let mut syscalls: BTreeMap<u32, Syscall> = BTreeMap::new();
    let mut max_nr = None;
    for e in entries {
        let act = e.action.ret();
        let nrs: Vec<(u32, &str)> = e
            .names
            .iter()
            .filter_map(|name| match abi.lookup(name) {
                Some(nr) => Some((nr, name.as_str())),
                None => {
                    tracing::debug!(
                        "seccomp: syscall {name:?} (linux.seccomp.syscalls[{}]) unknown on {}, ignored",
                        e.pos,
                        abi.name
                    );
                    None
                }
            })
            .collect();
        max_nr = nrs.iter().map(|(nr, _)| *nr).chain(max_nr).max();
        if act == default {
            continue;
        }
        let mut rules = Vec::new();
        for conds in &e.rules {
            if !conds.iter().all(|c| satisfiable(c, abi.wide_args)) {
                tracing::debug!(
                    "seccomp: a rule of linux.seccomp.syscalls[{}] can never match (valueTwo outside the mask), dropped",
                    e.pos
                );
                continue;
            }
            let conds = conds
                .iter()
                .map(|c| SeccompCondition::new(c.index, len.clone(), c.op.clone(), c.value))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| {
                    Error::invalid(
                        format!("linux.seccomp.syscalls[{}].args", e.pos),
                        err.to_string(),
                    )
                })?;
            let rule = SeccompRule::new(conds).map_err(|err| {
                Error::invalid(
                    format!("linux.seccomp.syscalls[{}].args", e.pos),
                    err.to_string(),
                )
            })?;
            rules.push(rule);
        }
        if !e.rules.is_empty() && rules.is_empty() {
            continue;
        }
        for (nr, name) in nrs {
            let sc = syscalls.entry(nr).or_default();
            if e.rules.is_empty() {
                match sc.unconditional {
                    None => sc.unconditional = Some(act),
                    Some(prev) if prev != act => tracing::debug!(
                        "seccomp: {name:?} in linux.seccomp.syscalls[{}] is shadowed by an earlier entry",
                        e.pos
                    ),
                    Some(_) => {}
                }
            } else {
                sc.conditional
                    .extend(rules.iter().map(|r| (r.clone(), act)));
            }
        }
    }
    Ok((syscalls, max_nr))
}

/// Labels of the shared `ret` instructions.
struct Rets {
    default: Label,
    enosys: Label,
    bad_arch: Label,
    /// One per action value that whole syscalls map to.
    actions: BTreeMap<u32, Label>,
}

/// Emit the dispatch on syscall number for one ABI (the number is in the
/// accumulator), queuing the per-syscall blocks in `blocks`.
fn emit_section(
    asm: &mut Asm,
    rets: &mut Rets,
    blocks: &mut Vec<(Label, Vec<sock_filter>)>,
    syscalls: BTreeMap<u32, Syscall>,
    enosys_above: Option<u32>,
    default: u32,
) {
    if let Some(max) = enosys_above {
        asm.jump_if(bpf::BPF_JMP_JGT_K, max, rets.enosys);
    }
    let mut targets = Vec::with_capacity(syscalls.len());
    for (nr, sc) in syscalls {
        let target = if sc.conditional.is_empty() {
            let act = sc.unconditional.unwrap_or(default);
            *rets.actions.entry(act).or_insert_with(|| asm.new_label())
        } else {
            let label = asm.new_label();
            let mut code = Vec::new();
            for (rule, act) in sc.conditional {
                code.extend(BpfProgram::from(rule));
                code.push(sock_filter {
                    code: bpf::BPF_RET_K,
                    jt: 0,
                    jf: 0,
                    k: act,
                });
            }
            // The final action, twice: seccompiler's rules start with a
            // `ja` past the rule *and one more instruction* (in its own
            // layout, the next rule's `ja`). It is never taken here, as
            // rules are entered at their first instruction, but the
            // kernel rejects a program whose jumps leave it.
            let last = sock_filter {
                code: bpf::BPF_RET_K,
                jt: 0,
                jf: 0,
                k: sc.unconditional.unwrap_or(default),
            };
            code.push(last.clone());
            code.push(last);
            blocks.push((label, code));
            label
        };
        targets.push((nr, target));
    }
    tree(asm, &targets, rets.default);
}

/// A binary search on the sorted syscall numbers, linear below 5 entries.
fn tree(asm: &mut Asm, targets: &[(u32, Label)], miss: Label) {
    if targets.len() <= 4 {
        for (nr, label) in targets {
            asm.jump_if(bpf::BPF_JMP_JEQ_K, *nr, *label);
        }
        asm.jump(miss);
        return;
    }
    let mid = targets.len() / 2;
    let upper = asm.new_label();
    asm.jump_if(bpf::BPF_JMP_JGE_K, targets[mid].0, upper);
    tree(asm, &targets[..mid], miss);
    asm.label(upper);
    tree(asm, &targets[mid..], miss);
}

fn compile_for(seccomp: &LinuxSeccomp, target: &Target) -> Result<Filter, Error> {
    let default_action = match action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        "linux.seccomp.defaultErrnoRet",
    )? {
        Action::Plain(a) => a,
        // As runc: every syscall, the runtime's own included, would wait
        // for an agent that does not have the listener yet.
        Action::Notify => {
            return Err(Error::invalid(
                "linux.seccomp.defaultAction",
                "SCMP_ACT_NOTIFY cannot be used as default action",
            ))
        }
    };
    let default = u32::from(default_action.clone());

    let mut flags = 0;
    for (i, flag) in seccomp.flags().iter().flatten().enumerate() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(Error::unsupported(
                    format!("linux.seccomp.flags[{i}]"),
                    format!("{flag} is not supported by berth"),
                ))
            }
        };
    }

    let mut with_x32 = false;
    let mut compat = Vec::new();
    for arch in seccomp.architectures().iter().flatten() {
        if target.native_archs.contains(arch) {
            continue;
        }
        if matches!(&target.x32, Some((a, _)) if a == arch) {
            with_x32 = true;
        } else if let Some((_, abi)) = target.compat.iter().find(|(a, _)| a == arch) {
            if !compat.iter().any(|c: &&Abi| std::ptr::eq(*c, abi)) {
                compat.push(abi);
            }
        } else {
            tracing::debug!(
                "seccomp: architecture {arch} cannot run on {}, ignored",
                target.native.name
            );
        }
    }

    let entries = entries(seccomp)?;
    let listener = if entries.iter().any(|e| e.action == Action::Notify) {
        Some(listener(seccomp)?)
    } else {
        None
    };
    let allowing = matches!(
        default_action,
        SeccompAction::Allow | SeccompAction::Log | SeccompAction::Trace(_)
    );
    let enosys_stub = !allowing && default_action != SeccompAction::Errno(libc::ENOSYS as u32);

    let mut asm = Asm::default();
    let mut rets = Rets {
        default: asm.new_label(),
        enosys: asm.new_label(),
        bad_arch: asm.new_label(),
        actions: BTreeMap::new(),
    };
    let mut blocks = Vec::new();

    // Architecture check.
    let native_label = asm.new_label();
    asm.load(bpf::DATA_ARCH);
    asm.jump_if(bpf::BPF_JMP_JEQ_K, target.native.audit, native_label);
    let compat_labels: Vec<Label> = compat.iter().map(|_| asm.new_label()).collect();
    for (abi, label) in compat.iter().zip(&compat_labels) {
        asm.jump_if(bpf::BPF_JMP_JEQ_K, abi.audit, *label);
    }
    asm.jump(rets.bad_arch);

    let mut sections: Vec<(Label, &Abi)> = vec![(native_label, &target.native)];
    let x32_label = asm.new_label();
    if let Some((_, abi)) = &target.x32 {
        if with_x32 {
            sections.push((x32_label, abi));
        }
    }
    sections.extend(compat_labels.iter().copied().zip(compat.iter().copied()));

    for (label, abi) in sections {
        asm.label(label);
        asm.load(bpf::DATA_NR);
        if std::ptr::eq(abi, &target.native) && target.x32.is_some() {
            let to = if with_x32 { x32_label } else { rets.bad_arch };
            asm.jump_if(bpf::BPF_JMP_JSET_K, X32_SYSCALL_BIT, to);
        }
        let (syscalls, max_nr) = section(abi, &entries, default)?;
        let enosys_above = if enosys_stub { max_nr } else { None };
        emit_section(
            &mut asm,
            &mut rets,
            &mut blocks,
            syscalls,
            enosys_above,
            default,
        );
    }
    if !with_x32 {
        // Never jumped to; define it so the assembler is satisfied.
        asm.label(x32_label);
    }

    asm.label(rets.default);
    asm.ret(default);
    asm.label(rets.enosys);
    asm.ret(u32::from(SeccompAction::Errno(libc::ENOSYS as u32)));
    asm.label(rets.bad_arch);
    asm.ret(u32::from(SeccompAction::KillProcess));
    for (act, label) in std::mem::take(&mut rets.actions) {
        asm.label(label);
        asm.ret(act);
    }
    for (label, code) in blocks {
        asm.label(label);
        asm.extend(code);
    }

    let program = asm.finish();
    if program.len() > bpf::MAX_INSNS {
        return Err(Error::TooLarge {
            len: program.len(),
            max: bpf::MAX_INSNS,
        });
    }
    tracing::debug!("seccomp: filter of {} instructions", program.len());
    Ok(Filter {
        program,
        flags,
        listener,
    })
}

/// `listenerPath` and `listenerMetadata`, for a profile with
/// `SCMP_ACT_NOTIFY` rules.
fn listener(seccomp: &LinuxSeccomp) -> Result<Listener, Error> {
    let path = seccomp
        .listener_path()
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            Error::invalid(
                "linux.seccomp.listenerPath",
                "SCMP_ACT_NOTIFY needs the path of the seccomp agent's socket here",
            )
        })?;
    Ok(Listener {
        path: Path::to_path_buf(path),
        metadata: seccomp.listener_metadata().clone().unwrap_or_default(),
    })
}
