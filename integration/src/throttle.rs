//! A loopback TCP proxy that slows what comes back from its target to a
//! fixed rate, so that a transfer from a local registry lasts long enough
//! to be interrupted on purpose. It lives as long as the value.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ThrottledProxy {
    /// `127.0.0.1:PORT`
    pub address: String,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl ThrottledProxy {
    /// Forwards connections to `target`, its answers at `bytes_per_second`.
    pub fn start(target: &str, bytes_per_second: u64) -> ThrottledProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (target, accept_stop, accept_streams) =
            (target.to_owned(), stop.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut held = accept_streams
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for stream in [&client, &upstream] {
                    if let Ok(clone) = stream.try_clone() {
                        held.push(clone);
                    }
                }
                drop(held);
                let (Ok(client_reader), Ok(upstream_writer)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    continue;
                };
                std::thread::spawn(move || pump(client_reader, upstream_writer, u64::MAX));
                std::thread::spawn(move || pump(upstream, client, bytes_per_second));
            }
        });
        ThrottledProxy {
            address,
            stop,
            streams,
        }
    }
}

/// Copies `from` into `to` at no more than `rate` bytes a second, until
/// either end closes; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: u64) {
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if rate != u64::MAX {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(&self.address);
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}
