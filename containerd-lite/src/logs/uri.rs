//! How the logger is named in a task's stdio, and what it receives.
//!
//! The Docker frontend puts [`logger_uri`] in the task's stdout and stderr.
//! The shim (ours, or containerd's runc shim) starts the binary the URI
//! names and turns the query into arguments: `?path=/x&max-size=10` becomes
//! `path /x max-size 10` (containerd does not keep the query's order).
//! `berth-logger` reads them back with [`LoggerConfig::from_args`].

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

use super::Rotation;
use crate::error::{Error, Result};

/// What may not appear unescaped in a URI's path (RFC 3986's path
/// characters, as URL parsers such as Go's escape them).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The `binary://` URI that makes the shim run the logger at `binary`
/// with `config`:
/// `binary:///usr/libexec/berth-logger?path=%2Fvar%2Flog%2Fc.log&max-size=10485760&max-file=3`.
pub fn logger_uri(binary: &Path, config: &LoggerConfig) -> String {
    let mut uri = String::from("binary://");
    uri.extend(percent_encode(binary.as_os_str().as_bytes(), PATH));
    uri.push_str("?path=");
    uri.extend(form_urlencoded::byte_serialize(
        config.path.as_os_str().as_bytes(),
    ));
    if let Some(max_size) = config.rotation.max_size {
        uri.push_str(&format!("&max-size={max_size}"));
    }
    if config.rotation.max_files != 1 {
        uri.push_str(&format!("&max-file={}", config.rotation.max_files));
    }
    if config.raw {
        uri.push_str("&raw=1");
    }
    uri
}

/// What `berth-logger` is told: where the log is, how it rotates, and
/// whether the output is a terminal's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerConfig {
    pub path: PathBuf,
    pub rotation: Rotation,
    /// A terminal's output: each read goes into the log as it came, not
    /// cut into lines, so a prompt without a newline is there at once
    /// (attach follows the log).
    pub raw: bool,
}

impl LoggerConfig {
    /// Reads the arguments the shim made of the URI's query: key and value
    /// pairs, in any order (`path` required; `max-size`, `max-file` as
    /// docker's log options).
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Result<LoggerConfig> {
        let mut args = args.into_iter();
        let mut path = None;
        let mut raw = false;
        let mut opts: Vec<(String, String)> = Vec::new();
        while let Some(key) = args.next() {
            let key = key
                .into_string()
                .map_err(|k| Error::invalid(format!("logger option {k:?} is not UTF-8")))?;
            let Some(value) = args.next() else {
                return Err(Error::invalid(format!(
                    "logger option {key:?} has no value"
                )));
            };
            if key == "path" {
                path = Some(PathBuf::from(value));
                continue;
            }
            if key == "raw" {
                raw = value == "1";
                continue;
            }
            let value = value
                .into_string()
                .map_err(|v| Error::invalid(format!("logger option {key}={v:?} is not UTF-8")))?;
            opts.push((key, value));
        }
        let path =
            path.ok_or_else(|| Error::invalid("logger: no path option (where to write the log)"))?;
        if !path.is_absolute() {
            return Err(Error::invalid(format!(
                "logger: the log path {} is not absolute",
                path.display()
            )));
        }
        let rotation = Rotation::from_log_opts(opts.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.context("logger"))?;
        Ok(LoggerConfig {
            path,
            rotation,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// The arguments a shim makes of `uri`'s query (containerd's contract:
    /// each key, then its value unless empty).
    fn query_args(uri: &str) -> Vec<OsString> {
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let mut args = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            args.push(OsString::from(key.into_owned()));
            if !value.is_empty() {
                args.push(OsString::from(value.into_owned()));
            }
        }
        args
    }

    #[test]
    fn a_uri_and_its_arguments() {
        let rotation = Rotation {
            max_size: Some(10 << 20),
            max_files: 3,
        };
        let uri = logger_uri(
            Path::new("/usr/lib/berth/berth-logger"),
            &LoggerConfig {
                path: "/var/lib/berth/containers/a b&c=d/json.log".into(),
                rotation,
                raw: false,
            },
        );
        assert_eq!(
            uri,
            "binary:///usr/lib/berth/berth-logger?path=%2Fvar%2Flib%2Fberth%2Fcontainers%2Fa+b%26c%3Dd%2Fjson.log&max-size=10485760&max-file=3"
        );
        let config = LoggerConfig::from_args(query_args(&uri)).unwrap();
        assert_eq!(
            config.path,
            Path::new("/var/lib/berth/containers/a b&c=d/json.log")
        );
        assert_eq!(config.rotation, rotation);
        assert!(!config.raw);
        let raw = LoggerConfig {
            raw: true,
            ..config
        };
        let uri = logger_uri(Path::new("/l"), &raw);
        assert!(uri.ends_with("&raw=1"), "{uri}");
        assert_eq!(LoggerConfig::from_args(query_args(&uri)).unwrap(), raw);
    }

    #[test]
    fn defaults_leave_the_options_out() {
        let uri = logger_uri(
            Path::new("/odd dir/logger?"),
            &LoggerConfig {
                path: "/l/c.log".into(),
                rotation: Rotation::default(),
                raw: false,
            },
        );
        assert_eq!(uri, "binary:///odd%20dir/logger%3F?path=%2Fl%2Fc.log");
        let config = LoggerConfig::from_args(query_args(&uri)).unwrap();
        assert_eq!(config.rotation, Rotation::default());
    }

    #[test]
    fn arguments_in_any_order() {
        let args = ["max-file", "2", "path", "/l/c.log", "max-size", "1k"].map(OsString::from);
        let config = LoggerConfig::from_args(args).unwrap();
        assert_eq!(
            config,
            LoggerConfig {
                path: "/l/c.log".into(),
                rotation: Rotation {
                    max_size: Some(1024),
                    max_files: 2
                },
                raw: false,
            }
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, why) in [
            (&[][..], "no path option"),
            (&["path"][..], "\"path\" has no value"),
            (
                &["path", "relative.log"][..],
                "relative.log is not absolute",
            ),
            (
                &["path", "/l", "max-size", "huge"][..],
                "logger: size \"huge\"",
            ),
            (
                &["path", "/l", "color", "red"][..],
                "unknown log opt \"color\"",
            ),
        ] {
            let err = LoggerConfig::from_args(args.iter().map(OsString::from)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
            assert!(err.message.contains(why), "{args:?}: {}", err.message);
        }
    }
}
