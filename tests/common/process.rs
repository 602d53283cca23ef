//! The real `weir` binary run as a child process, and the lines it logs.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A temporary config file holding `toml`.
pub fn write_config(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(toml.as_bytes()).expect("write");
    file
}

/// A running `weir run` process and the lines it logs.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// The proxy listener's bound address, read from its log.
    pub addr: SocketAddr,
}

impl Running {
    /// Starts `weir run -c config` and waits until it listens.
    pub fn start(config: &std::path::Path) -> Self {
        Self::start_with(config, &[])
    }

    /// Like [`Running::start`], with extra environment variables.
    pub fn start_with(config: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut child = Command::new(WEIR)
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weir");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut running = Self {
            child,
            lines,
            addr: "0.0.0.0:0".parse().expect("addr"),
        };
        let line = running.wait_for_line("listening");
        let addr = line
            .rsplit("listen=")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        running.addr = addr;
        running
    }

    /// The next log line containing `needle`, within 10 s.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("weir did not log {needle:?} within 10 s"),
            }
        }
    }

    /// Sends signal `name` (e.g. `HUP`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Peak resident memory of the process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Waits (10 s at most) for the process to exit and returns its code.
    pub fn wait_exit(mut self) -> Option<i32> {
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("weir did not exit within 10 s");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
