//! A tansu broker as a child process.
//!
//! tansu 0.6.0 with sqlite storage implements what brook's plumbing tests
//! need (topics with configs, describe configs, keyed produce, consumer
//! groups with committed offsets, idempotent producer, watermarks, and
//! persistence across a broker restart) but not transactions (no EndTxn).
//! Each [`TansuBroker`] gets its own directory and loopback port; it is
//! stopped when dropped, and on Linux the kernel kills it if the thread that
//! started it dies without dropping it (a test process killed by a timeout).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{Result, TestkitError, io_err};

/// The tansu version brook's tests are written against.
pub const TANSU_VERSION: &str = "0.6.0";

/// Environment variable with the path of the tansu binary to use.
pub const TANSU_ENV: &str = "BROOK_TANSU";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_BYTES: u64 = 4000;

fn cached_tansu() -> PathBuf {
    let cache = std::env::var_os("BROOK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/brook")))
        .unwrap_or_else(|| PathBuf::from(".cache/brook"));
    cache.join("tools/bin/tansu")
}

/// Finds the tansu binary: `$BROOK_TANSU`, then the copy `make tools`
/// installs (`$BROOK_CACHE/tools/bin/tansu`, by default under
/// `~/.cache/brook`), then `tansu` on `$PATH`.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(TANSU_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(TestkitError::Io {
                what: format!("{TANSU_ENV}={}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            })
        };
    }
    let cached = cached_tansu();
    if cached.is_file() {
        return Ok(cached);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path.ok_or_else(|| TestkitError::TansuMissing {
        cached: cached.display().to_string(),
    })
}

/// A running tansu broker with sqlite storage in a directory of its own.
#[derive(Debug)]
pub struct TansuBroker {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// A SCRAM-SHA-512 user every client must log in as (`--authentication`).
    scram: Option<(String, String)>,
    /// The port advertised to clients, when not its own (a proxy's).
    advertised: Option<u16>,
}

/// The SASL mechanism tansu's `--authentication` offers (PLAIN is not).
pub const TANSU_SASL_MECHANISM: &str = "SCRAM-SHA-512";

impl TansuBroker {
    /// Starts a broker on a free loopback port and waits until it answers a
    /// metadata request.
    pub fn start() -> Result<Self> {
        Self::start_behind(|_| Ok(((), None))).map(|(broker, ())| broker)
    }

    /// Starts a broker with a front (a proxy) that `front` starts for the
    /// broker's port before the broker; when it returns a port, clients are
    /// told to reach the broker there.
    pub fn start_behind<F>(
        mut front: impl FnMut(u16) -> Result<(F, Option<u16>)>,
    ) -> Result<(Self, F)> {
        let binary = tansu_binary()?;
        // Another process may grab the port between our probe and tansu's
        // bind; try a few ports before giving up.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let (front, advertised) = front(port)?;
            let mut broker = TansuBroker {
                binary: binary.clone(),
                dir: tempfile::Builder::new()
                    .prefix("brook-tansu-")
                    .tempdir()
                    .map_err(io_err("creating a directory for tansu"))?,
                port,
                child: None,
                scram: None,
                advertised,
            };
            match broker.spawn().and_then(|()| broker.wait_ready()) {
                Ok(()) => return Ok((broker, front)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one attempt was made"))
    }

    /// From now on every client must authenticate as `user` with
    /// `password` (SASL SCRAM-SHA-512): creates the user (over the still
    /// open listener), then restarts the broker with `--authentication`.
    pub fn require_scram(&mut self, user: &str, password: &str) -> Result<()> {
        let url = format!("tcp://{}", self.bootstrap());
        let out = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args(["user", "create", "--broker", &url, user, password])
            .args(["--mechanism", "scram512"])
            .output()
            .map_err(io_err("running tansu user create"))?;
        if !out.status.success() {
            return Err(TestkitError::TansuStart {
                bootstrap: self.bootstrap(),
                reason: format!(
                    "tansu user create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                log: self.log_tail(),
            });
        }
        self.stop()?;
        self.scram = Some((user.to_owned(), password.to_owned()));
        self.spawn()?;
        self.wait_ready()
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding the broker's database and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s) and starts it
    /// again on the same port and database.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()?;
        self.wait_ready()
    }

    /// Kills the broker without warning (SIGKILL), as a crash or power loss
    /// would, and starts it again on the same port and database.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.kill()?;
        self.resume()
    }

    /// Kills the broker without warning (SIGKILL) and leaves it down.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(io_err("killing tansu"))?;
            child.wait().map_err(io_err("waiting for tansu"))?;
        }
        Ok(())
    }

    /// Starts a stopped or killed broker again on the same port and
    /// database (a no-op when it runs).
    pub fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()?;
        self.wait_ready()
    }

    /// Stops the broker; its data stays in [`TansuBroker::dir`].
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child
                .try_wait()
                .map_err(io_err("waiting for tansu"))?
                .is_some()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().map_err(io_err("killing tansu"))?;
        child.wait().map_err(io_err("waiting for tansu"))?;
        Ok(())
    }

    /// The last few KB of the broker's log.
    pub fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(self.log_path()) else {
            return String::from("(no log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut tail = Vec::new();
        let _ = file.read_to_end(&mut tail);
        String::from_utf8_lossy(&tail).into_owned()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err("opening tansu's log"))?;
        let log_err = log.try_clone().map_err(io_err("opening tansu's log"))?;
        let url = format!("tcp://{}", self.bootstrap());
        let advertised = match self.advertised {
            Some(port) => format!("tcp://127.0.0.1:{port}"),
            None => url.clone(),
        };
        let mut command = Command::new(&self.binary);
        command
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(self.scram.is_some().then_some("--authentication"))
            .env(
                "RUST_LOG",
                std::env::var("BROOK_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(io_err(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        let fail = |broker: &TansuBroker, reason: String| TestkitError::TansuStart {
            bootstrap: broker.bootstrap(),
            reason,
            log: broker.log_tail(),
        };
        loop {
            let child = self.child.as_mut().expect("spawned before waiting");
            if let Some(status) = child.try_wait().map_err(io_err("waiting for tansu"))? {
                self.child = None;
                return Err(fail(self, format!("exited with {status}")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(fail(self, format!("not listening after {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        // Listening is not serving: wait for a metadata answer.
        let mut probe = ClientConfig::new();
        probe.set("bootstrap.servers", self.bootstrap());
        if let Some((user, password)) = &self.scram {
            probe
                .set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanisms", TANSU_SASL_MECHANISM)
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        let consumer: BaseConsumer = probe
            .create()
            .map_err(|e| fail(self, format!("cannot create a probe client: {e}")))?;
        let remaining = START_TIMEOUT
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        consumer
            .fetch_metadata(None, remaining)
            .map_err(|e| fail(self, format!("no metadata answer: {e}")))?;
        Ok(())
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(io_err("finding a free loopback port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("finding a free loopback port"))?
        .port();
    Ok(port)
}

#[allow(unsafe_code)]
fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
