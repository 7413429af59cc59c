//! Debian's docker-registry on a free loopback port, for tests that push
//! and pull. It lives as long as the value; dropping it stops exactly the
//! process it started.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Start one, or `None` (with a skip line) when the package is missing.
    pub fn start() -> Option<Registry> {
        let binary = Path::new("/usr/bin/docker-registry");
        if !binary.exists() {
            eprintln!("skipped: /usr/bin/docker-registry missing (Debian's docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\nlog:\n  level: error\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            child,
            address,
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
