//! A TLS front for a plaintext broker, so that tests can run brook's
//! clients with `security.protocol=SSL` (tansu 0.6.0 takes `--cert`/`--key`
//! but does not use them; librdkafka's mock cluster has no TLS).
//!
//! A self-signed certificate for `127.0.0.1` is made with the `openssl`
//! command and `socat` terminates TLS with it, forwarding each connection
//! to the broker; the broker advertises the proxy's address, so every
//! connection a client makes goes through TLS. Both commands come with
//! `make tools`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, TestkitError, io_err};

/// A running TLS proxy; stopped when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

fn tool_missing(tool: &str, e: std::io::Error) -> TestkitError {
    TestkitError::Io {
        what: format!("running {tool} (install it with `make tools`)"),
        source: e,
    }
}

impl TlsProxy {
    /// Listens with TLS on loopback port `port` and forwards to `target`.
    pub fn start(port: u16, target: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("brook-tls-")
            .tempdir()
            .map_err(io_err("creating a directory for the TLS proxy"))?;
        let out = Command::new("openssl")
            .current_dir(dir.path())
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args(["-keyout", "broker.key", "-out", "broker.pem", "-days", "2"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| tool_missing("openssl", e))?;
        if !out.status.success() {
            return Err(TestkitError::Io {
                what: format!(
                    "making a certificate: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                source: std::io::Error::other("openssl failed"),
            });
        }
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=broker.pem,key=broker.key,verify=0"
        );
        let mut command = Command::new("socat");
        command
            .current_dir(dir.path())
            .args([listen, format!("TCP:{target}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::tansu::die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| tool_missing("socat", e))?;
        let mut proxy = TlsProxy { dir, port, child };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = proxy
                .child
                .try_wait()
                .map_err(io_err("waiting for socat"))?
            {
                return Err(TestkitError::Io {
                    what: format!("socat exited with {status} before listening on {port}"),
                    source: std::io::Error::other("socat exited"),
                });
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(TestkitError::Io {
                    what: format!("socat not listening on {port} after 10 s"),
                    source: std::io::Error::other("timeout"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(proxy)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The certificate (PEM) that clients must trust: `ssl.ca.location`.
    pub fn ca_location(&self) -> PathBuf {
        self.dir.path().join("broker.pem")
    }

    /// The directory with the certificate and key.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
