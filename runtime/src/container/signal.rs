//! Signal names and numbers as `kill` accepts them: "KILL", "SIGKILL", "9",
//! and "0" (no signal: only check that the process exists).

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// `None` is signal 0.
pub fn parse_signal(text: &str) -> Result<Option<Signal>> {
    let bad = || Error::invalid(format!("unknown signal {text:?}"));
    if let Ok(n) = text.parse::<i32>() {
        if n == 0 {
            return Ok(None);
        }
        return Signal::try_from(n).map(Some).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map(Some).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm").unwrap(), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("9").unwrap(), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("0").unwrap(), None);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
