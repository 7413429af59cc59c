//! A token server for tests: docker-registry's `auth: token` mode, with
//! RS256 JWTs signed by a throw-away self-signed key (made and used with
//! the `openssl` command). It grants what a request's `scope` asks for to
//! the one user it knows, over HTTP basic auth.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

pub(super) const ISSUER: &str = "berth-test-issuer";
pub(super) const SERVICE: &str = "berth-test-registry";

pub(super) struct TokenServer {
    pub(super) realm: String,
    pub(super) root_cert: PathBuf,
    stop: Arc<AtomicBool>,
    address: String,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts serving tokens to `user`:`password`; keys go in `dir`.
    pub(super) fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=berth-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(made.success(), "openssl req failed");
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let expected_auth = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let issuer = Issuer {
            key,
            x5c: STANDARD.encode(der),
            subject: user.to_owned(),
        };
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &expected_auth, &issuer);
                }
            }
        });
        TokenServer {
            realm: format!("http://{address}/token"),
            root_cert: cert,
            stop,
            address,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Issuer {
    key: PathBuf,
    x5c: String,
    subject: String,
}

impl Issuer {
    /// A JWT granting `scopes` (`repository:<name>:<actions>`).
    fn token(&self, scopes: &[String]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let header = json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.x5c] });
        let claims = json!({
            "iss": ISSUER, "sub": self.subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": format!("{now}-{}", scopes.len()), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        openssl
            .stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let signature = openssl.wait_with_output().unwrap().stdout;
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// Answers one HTTP request: a token for the right credentials, 401 else.
fn serve(mut stream: TcpStream, expected_auth: &str, issuer: &Issuer) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == expected_auth {
                authorized = true;
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let scopes: Vec<String> = target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| {
            scope
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
        .collect();
    let (status, body) = if authorized {
        let token = issuer.token(&scopes);
        (
            "200 OK",
            json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned(),
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The registry config lines that delegate auth to this server.
pub(super) fn registry_auth_config(server: &TokenServer) -> String {
    format!(
        "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        server.realm,
        server.root_cert.display()
    )
}
