//! The command line containerd passes, parsed the way Go's `flag` package
//! does: `-name value`, `-name=value`, `--name value`, bare booleans, then
//! the action (`start`, `delete`, or nothing to serve).

use std::fmt;

/// What containerd asked the binary to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Serve,
    Start,
    Delete,
}

/// Parsed flags. Empty strings mean "not given".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    /// containerd's gRPC socket (`-address`): the shim's socket is derived from it.
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: String,
    pub debug: bool,
    pub version: bool,
    pub action: Action,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FlagError(String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlagError {}

impl Flags {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, FlagError> {
        let mut flags = Flags {
            namespace: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            id: String::new(),
            bundle: String::new(),
            debug: false,
            version: false,
            action: Action::Serve,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix('-') else {
                flags.action = match arg.as_str() {
                    "start" => Action::Start,
                    "delete" => Action::Delete,
                    other => return Err(FlagError(format!("unknown action {other:?}"))),
                };
                // Go's flag package stops at the first non-flag argument.
                break;
            };
            let flag = flag.strip_prefix('-').unwrap_or(flag);
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            if let Some(slot) = flags.bool_slot(name) {
                *slot = match inline.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(other) => {
                        return Err(FlagError(format!("invalid value {other:?} for -{name}")))
                    }
                };
                continue;
            }
            let Some(slot) = flags.string_slot(name) else {
                return Err(FlagError(format!("flag provided but not defined: -{name}")));
            };
            *slot = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}")))?,
            };
        }
        Ok(flags)
    }

    fn bool_slot(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "debug" => Some(&mut self.debug),
            "v" | "version" => Some(&mut self.version),
            _ => None,
        }
    }

    fn string_slot(&mut self, name: &str) -> Option<&mut String> {
        match name {
            "namespace" => Some(&mut self.namespace),
            "address" => Some(&mut self.address),
            "publish-binary" => Some(&mut self.publish_binary),
            "id" => Some(&mut self.id),
            "bundle" => Some(&mut self.bundle),
            _ => None,
        }
    }

    /// The flags a serving shim is started with: the same, minus the action.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args = vec![
            "-namespace".to_string(),
            self.namespace.clone(),
            "-id".to_string(),
            self.id.clone(),
            "-address".to_string(),
            self.address.clone(),
        ];
        if !self.publish_binary.is_empty() {
            args.extend(["-publish-binary".to_string(), self.publish_binary.clone()]);
        }
        if self.debug {
            args.push("-debug".to_string());
        }
        args
    }

    /// Namespace and id are required by every action.
    pub fn require_identity(&self) -> Result<(), FlagError> {
        if self.namespace.is_empty() {
            return Err(FlagError("-namespace is required".into()));
        }
        if self.id.is_empty() {
            return Err(FlagError("-id is required".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn containerd_start_line() {
        let f = parse(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action, Action::Start);
    }

    #[test]
    fn equals_double_dash_and_delete() {
        let f = parse(&["--namespace=k8s.io", "-id=x", "-bundle", "/b", "delete"]).unwrap();
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.bundle, "/b");
        assert_eq!(f.action, Action::Delete);
        assert_eq!(parse(&["-id", "x"]).unwrap().action, Action::Serve);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            parse(&["-bogus", "1"]).unwrap_err().to_string(),
            "flag provided but not defined: -bogus"
        );
        assert_eq!(
            parse(&["-id"]).unwrap_err().to_string(),
            "flag needs an argument: -id"
        );
        assert!(parse(&["frobnicate"])
            .unwrap_err()
            .to_string()
            .contains("frobnicate"));
        assert!(parse(&["-debug=maybe"]).is_err());
    }

    #[test]
    fn serve_args_round_trip() {
        let f = parse(&[
            "-namespace",
            "n",
            "-id",
            "i",
            "-address",
            "/a",
            "-debug",
            "start",
        ])
        .unwrap();
        let again = Flags::parse(f.serve_args()).unwrap();
        assert_eq!(again.action, Action::Serve);
        assert_eq!(
            (again.namespace, again.id, again.address),
            ("n".into(), "i".into(), "/a".into())
        );
        assert!(again.debug);
    }
}
