//! Compiling device rules into a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
//!
//! The kernel runs the program on every open(2) of a device node and every
//! mknod(2) by a process of the cgroup, with the device's type and numbers
//! and the accesses asked for (read and/or write, or mknod); returning 1
//! allows, 0 denies (`EPERM`).
//!
//! Rules are applied in order and later rules win, access by access: an
//! access is decided by the last rule that matches the device and names
//! that access; one that no rule names is denied. So the program walks the
//! rules from the last to the first, keeping the accesses still undecided
//! in a register: a matching deny rule that names an undecided access
//! denies the request; a matching allow rule decides the accesses it names,
//! and once none is left the request is allowed. A rule covering every
//! device and access ends the walk: the rules before it can never matter,
//! and are not emitted.

use super::super::convert;
use super::super::error::Result;
use super::insn::{Assembler, Cond, Insn, Reg};
use super::rules::{DeviceKind, DeviceRule};

/// Offsets of the fields of the kernel's `struct bpf_cgroup_dev_ctx`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
/// `BPF_DEVCG_DEV_*`: the device type, in the low 16 bits of access_type
/// (the `BPF_DEVCG_ACC_*` accesses are in the high 16 bits).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Accesses asked for and not decided yet.
const PENDING: Reg = Reg::R2;
/// The device type (`DEV_BLOCK` or `DEV_CHAR`).
const KIND: Reg = Reg::R3;
/// The device numbers.
const MAJOR: Reg = Reg::R4;
const MINOR: Reg = Reg::R5;

/// A compiled device filter: the program for one container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    insns: Vec<Insn>,
    allows_everything: bool,
}

impl DeviceFilter {
    /// Compile `rules` (in order, later rules win; what no rule allows is
    /// denied).
    pub fn compile(rules: &[DeviceRule]) -> Result<DeviceFilter> {
        // Only the rules after the last one that covers everything matter;
        // that one (or, without one, "deny") decides what they leave open.
        let (effective, fallback_allows) = match rules.iter().rposition(DeviceRule::is_total) {
            Some(at) => (&rules[at + 1..], rules[at].allow),
            None => (rules, false),
        };
        // When no rule can change the outcome the program is a constant.
        // (This also keeps the verifier happy: it refuses code that cannot
        // be reached.)
        if effective.iter().all(|r| r.allow == fallback_allows) {
            return Ok(DeviceFilter {
                insns: constant(fallback_allows),
                allows_everything: fallback_allows,
            });
        }
        let mut asm = Assembler::default();
        let (allow, deny) = (asm.label(), asm.label());
        asm.emit(Insn::load_u32(PENDING, Reg::R1, CTX_ACCESS_TYPE));
        asm.emit(Insn::mov_reg(KIND, PENDING));
        asm.emit(Insn::and_imm(KIND, 0xffff));
        asm.emit(Insn::rsh_imm(PENDING, 16));
        asm.emit(Insn::load_u32(MAJOR, Reg::R1, CTX_MAJOR));
        asm.emit(Insn::load_u32(MINOR, Reg::R1, CTX_MINOR));
        for rule in effective.iter().rev() {
            let next = asm.label();
            match rule.kind {
                DeviceKind::All => {}
                DeviceKind::Block => asm.jump(Cond::Ne(KIND, DEV_BLOCK), next),
                DeviceKind::Char => asm.jump(Cond::Ne(KIND, DEV_CHAR), next),
            }
            if let Some(major) = rule.major {
                asm.jump(Cond::Ne32(MAJOR, major), next);
            }
            if let Some(minor) = rule.minor {
                asm.jump(Cond::Ne32(MINOR, minor), next);
            }
            let access = i32::from(rule.access.bits());
            if rule.allow {
                asm.emit(Insn::and_imm(PENDING, !access));
                asm.jump(Cond::Eq(PENDING, 0), allow);
            } else {
                asm.jump(Cond::AnySet(PENDING, access), deny);
            }
            asm.bind(next);
        }
        // Both outcomes are reachable here: the fallback by falling
        // through, the other by a rule (checked above).
        let outcomes = if fallback_allows {
            [(allow, 1), (deny, 0)]
        } else {
            [(deny, 0), (allow, 1)]
        };
        for (label, verdict) in outcomes {
            asm.bind(label);
            asm.emit(Insn::mov_imm(Reg::R0, verdict));
            asm.emit(Insn::exit());
        }
        let insns = asm.finish().map_err(|too_far| {
            convert::invalid(
                "linux.resources.devices",
                format!("{} rules", rules.len()),
                &format!(
                    "too many rules for one device filter (a jump of {} instructions)",
                    too_far.distance
                ),
            )
        })?;
        Ok(DeviceFilter {
            insns,
            allows_everything: false,
        })
    }

    /// The filter for a container whose spec has the device rules `spec`:
    /// everything denied but what the spec's rules and the default
    /// devices allow (see [`super::container_rules`]).
    pub fn for_container(spec: &[oci_spec::runtime::LinuxDeviceCgroup]) -> Result<DeviceFilter> {
        DeviceFilter::compile(&super::rules::container_rules(spec)?)
    }

    /// A filter made of exactly `insns`, for tests that need a program
    /// the compiler would never write (one the verifier refuses).
    #[cfg(test)]
    pub(super) fn from_instructions(insns: Vec<Insn>) -> DeviceFilter {
        DeviceFilter {
            insns,
            allows_everything: false,
        }
    }

    /// The instructions.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The program as the kernel takes it: 8 bytes per instruction.
    pub fn bytecode(&self) -> Vec<[u8; 8]> {
        self.insns.iter().map(|i| i.to_bytes()).collect()
    }

    /// Whether the filter allows every access to every device (then no
    /// program needs to be attached at all).
    pub fn allows_everything(&self) -> bool {
        self.allows_everything
    }
}

/// A program that always returns `allow`.
fn constant(allow: bool) -> Vec<Insn> {
    vec![Insn::mov_imm(Reg::R0, i32::from(allow)), Insn::exit()]
}
