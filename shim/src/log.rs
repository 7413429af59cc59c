//! Shim logs. containerd creates a fifo named `log` in the bundle and copies
//! what the shim writes there into its own log; without it (tests, or a
//! containerd that is gone) lines go to stderr, which is /dev/null for a
//! daemonized shim. Lines are logrus-style so they read well in
//! containerd's journal.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

struct Sink {
    file: Option<File>,
    debug: bool,
}

static SINK: OnceLock<Mutex<Sink>> = OnceLock::new();

/// Route logs to `<bundle>/log` if containerd opened it for reading.
pub fn init(bundle: &Path, debug: bool) {
    // O_NONBLOCK: a fifo nobody reads must not hang the shim, neither at
    // open (ENXIO) nor on write (EAGAIN drops the line).
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .ok();
    let _ = SINK.set(Mutex::new(Sink { file, debug }));
}

fn write(level: &str, msg: &str) {
    let Some(sink) = SINK.get() else {
        eprintln!("level={level} msg={msg:?}");
        return;
    };
    let Ok(mut sink) = sink.lock() else { return };
    if level == "debug" && !sink.debug {
        return;
    }
    let line = format!(
        "time=\"{}\" level={level} msg={msg:?} runtime=io.containerd.berth.v2\n",
        rfc3339_now()
    );
    match sink.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => eprint!("{line}"),
    }
}

pub fn error(msg: impl AsRef<str>) {
    write("error", msg.as_ref());
}

pub fn warn(msg: impl AsRef<str>) {
    write("warning", msg.as_ref());
}

pub fn info(msg: impl AsRef<str>) {
    write("info", msg.as_ref());
}

pub fn debug(msg: impl AsRef<str>) {
    write("debug", msg.as_ref());
}

/// UTC timestamp `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
