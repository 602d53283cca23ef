//! A real `redis-server` for the tests of global limits: started on a free
//! 127.0.0.1 port as a child process, with no persistence, and killed by its
//! PID when dropped. `.ci/run` installs it (Debian's `redis-server`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start_on(port)
    }

    /// Starts one on `port` (again, after [`RedisServer::stop`]), and waits
    /// (up to 5 s) until it answers `PING`.
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
            });
        let server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (by its PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command; returns the reply's raw text (trimmed), or `None`
    /// when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut conn = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for arg in args {
            req.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        conn.write_all(req.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 8192];
        // A reply ends with CRLF; bulk replies (INFO) are read until their
        // declared length has arrived.
        loop {
            let n = conn.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some(rest) = text.strip_prefix('$') {
                let (len, body) = rest.split_once("\r\n")?;
                let len: usize = len.parse().ok()?;
                if body.len() >= len + 2 {
                    break;
                }
            } else if text.ends_with("\r\n") {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).trim().to_owned())
    }

    /// Calls of `command` so far (`INFO commandstats`), 0 when none.
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
