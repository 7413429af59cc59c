//! What /proc tells about a process: its run state and start time.

/// A snapshot of /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    /// The one-letter state (R, S, D, Z, T, X, ...).
    pub state: char,
    pub ppid: i32,
    /// Start time after boot, in clock ticks: with the pid, it names one
    /// process for good (pids are reused, start times are not).
    pub start_time: u64,
}

impl ProcessInfo {
    /// Read /proc/PID/stat; `None` if the process does not exist.
    pub fn read(pid: i32) -> Option<ProcessInfo> {
        if pid <= 0 {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(pid, &text)
    }

    /// Parse the text of /proc/PID/stat. The command name (field 2) is in
    /// parentheses and may itself contain spaces and parentheses, so the
    /// fields are counted from the last ')'.
    pub fn parse(pid: i32, text: &str) -> Option<ProcessInfo> {
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] is field 3 (state); start time is field 22.
        Some(ProcessInfo {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Alive means not yet exited: zombies and dead entries do not count.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_parens_and_spaces() {
        let line = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10 1";
        let p = ProcessInfo::parse(42, line).unwrap();
        assert_eq!(p.state, 'S');
        assert_eq!(p.ppid, 1);
        assert_eq!(p.start_time, 12345);
        assert!(p.is_alive());
    }

    #[test]
    fn reads_self() {
        let me = ProcessInfo::read(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(ProcessInfo::read(0).is_none());
    }
}
