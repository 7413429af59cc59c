//! Device cgroup rules: the OCI `linux.resources.devices` entries checked
//! and turned into typed rules, and the full list a container gets.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::super::convert::{self, DEFAULT_DEVICE_RULES};
use super::super::error::Result;

/// Which devices a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Block and character devices (OCI type `a`).
    All,
    /// Block devices (`b`).
    Block,
    /// Character devices (`c`).
    Char,
}

/// A set of device accesses: read, write, mknod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    /// mknod(2) of the device.
    pub const MKNOD: Access = Access(1);
    /// Opening it for reading.
    pub const READ: Access = Access(2);
    /// Opening it for writing.
    pub const WRITE: Access = Access(4);
    /// Every access (`rwm`).
    pub const ALL: Access = Access(7);

    /// The bits as the kernel's `BPF_DEVCG_ACC_*` flags.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Both sets together.
    pub fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    /// Whether every access in `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parse the letters `r`, `w` and `m`. Other letters are ignored as
    /// in the v1 rules (see `convert::device_rule`), but at least one of
    /// the three is needed; empty or unset means all three.
    fn parse(letters: Option<&str>) -> std::result::Result<Access, &'static str> {
        let letters = letters.filter(|l| !l.is_empty()).unwrap_or("rwm");
        let access = letters.chars().fold(Access(0), |acc, c| match c {
            'r' => acc.union(Access::READ),
            'w' => acc.union(Access::WRITE),
            'm' => acc.union(Access::MKNOD),
            _ => acc,
        });
        if access == Access(0) {
            Err("needs at least one of r, w and m")
        } else {
            Ok(access)
        }
    }
}

/// One device rule: allow or deny `access` to the devices it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// Block, character or both.
    pub kind: DeviceKind,
    /// The major number, or `None` for any.
    pub major: Option<u32>,
    /// The minor number, or `None` for any.
    pub minor: Option<u32>,
    /// The accesses the rule allows or denies.
    pub access: Access,
}

impl DeviceRule {
    /// Deny every access to every device.
    pub const DENY_ALL: DeviceRule = DeviceRule {
        allow: false,
        kind: DeviceKind::All,
        major: None,
        minor: None,
        access: Access::ALL,
    };

    /// Whether the rule applies to every device and every access.
    pub fn is_total(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == Access::ALL
    }

    /// Check and convert `linux.resources.devices[index]`.
    pub fn from_oci(index: usize, rule: &LinuxDeviceCgroup) -> Result<DeviceRule> {
        let invalid = |name: &str, value: &dyn ToString, reason: &str| {
            let field = format!("linux.resources.devices[{index}].{name}");
            convert::invalid(&field, value.to_string(), reason)
        };
        let kind = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C => DeviceKind::Char,
            other @ (LinuxDeviceType::U | LinuxDeviceType::P) => {
                return Err(invalid(
                    "type",
                    &other.as_str(),
                    "device cgroup rules take a (all), b (block) or c (char)",
                ))
            }
        };
        let number = |name: &str, n: Option<i64>| match n {
            None | Some(-1) => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                invalid(
                    name,
                    &v,
                    "must be -1 (any) or a device number from 0 to 4294967295",
                )
            }),
        };
        let access = Access::parse(rule.access().as_deref()).map_err(|reason| {
            invalid(
                "access",
                &rule.access().as_deref().unwrap_or_default(),
                reason,
            )
        })?;
        Ok(DeviceRule {
            allow: rule.allow(),
            kind,
            major: number("major", rule.major())?,
            minor: number("minor", rule.minor())?,
            access,
        })
    }

    /// Parse an allow rule written as a v1 `devices.allow` line
    /// (`TYPE MAJOR:MINOR ACCESS`, `*` for any number).
    fn from_v1_allow_line(line: &str) -> Option<DeviceRule> {
        let mut parts = line.split(' ');
        let (typ, numbers, letters) = (parts.next()?, parts.next()?, parts.next()?);
        let kind = match typ {
            "a" => DeviceKind::All,
            "b" => DeviceKind::Block,
            "c" => DeviceKind::Char,
            _ => return None,
        };
        let number = |n: &str| match n {
            "*" => Some(None),
            n => n.parse().ok().map(Some),
        };
        let (major, minor) = numbers.split_once(':')?;
        Some(DeviceRule {
            allow: true,
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: Access::parse(Some(letters)).ok()?,
        })
    }
}

/// The runtime's default device rules (`convert::DEFAULT_DEVICE_RULES`,
/// shared with cgroup v1), as typed rules.
pub fn default_rules() -> Result<Vec<DeviceRule>> {
    DEFAULT_DEVICE_RULES
        .iter()
        .map(|line| {
            DeviceRule::from_v1_allow_line(line).ok_or_else(|| {
                convert::invalid(
                    "default device rules",
                    line,
                    "not a TYPE MAJ:MIN ACCESS line",
                )
            })
        })
        .collect()
}

/// Everything a container's device filter enforces, in order (later rules
/// win): deny everything, then the spec's rules, then the default devices
/// every container may use, as runc does and as cgroup v1 gets them.
pub fn container_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut rules = vec![DeviceRule::DENY_ALL];
    for (index, rule) in spec.iter().enumerate() {
        rules.push(DeviceRule::from_oci(index, rule)?);
    }
    rules.extend(default_rules()?);
    Ok(rules)
}
