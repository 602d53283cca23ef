//! Opens many idle HTTP/1.1 keep-alive connections, for `benches/idle_conns.sh`.
//!
//! ```text
//! idle_clients ADDR COUNT [--concurrency 256] [--hold SECS] [--path /]
//! ```
//!
//! Each connection sends one `GET` and reads the whole answer (by its
//! `Content-Length`), then stays open and silent. At most `--concurrency`
//! connections are being set up at once. When all are set up it prints
//! `READY <ok> <failed>`; after `--hold` seconds (default 30) it checks every
//! socket without blocking, prints `STILL_OPEN <n>` (closed ones read EOF)
//! and exits, closing them all. Give it `ulimit -n` above COUNT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Bound on one connection's setup: connect, request and answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
    hold: Duration,
    path: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: idle_clients ADDR COUNT [--concurrency N] [--hold SECS] [--path /]";
    let addr = args.next().ok_or(usage)?;
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    let count = args.next().ok_or(usage)?;
    let count: usize = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    let mut opts = Options {
        addr,
        count,
        concurrency: 256,
        hold: Duration::from_secs(30),
        path: "/".to_owned(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("bad {flag} {value:?}"))
        };
        match flag.as_str() {
            "--concurrency" => opts.concurrency = number()?.max(1) as usize,
            "--hold" => opts.hold = Duration::from_secs(number()?),
            "--path" => opts.path = value,
            _ => return Err(format!("unknown option {flag}; {usage}")),
        }
    }
    Ok(opts)
}

/// Connects, sends one request, reads its answer; returns the idle socket.
async fn open_one(addr: SocketAddr, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(format!(
                    "unexpected answer: {}",
                    head.lines().next().unwrap_or("")
                )));
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            if buf.len() >= end + 4 + length {
                return Ok(stream);
            }
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("answer too large"));
        }
    }
}

async fn run(opts: Options) -> ExitCode {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: idle_clients\r\n\r\n",
        opts.path, opts.addr
    )
    .into_bytes();
    let request: &'static [u8] = request.leak();
    let mut open = Vec::with_capacity(opts.count);
    let mut failed = 0usize;
    let mut first_error = None;
    let mut tasks = JoinSet::new();
    let mut started = 0;
    while open.len() + failed < opts.count {
        while started < opts.count && tasks.len() < opts.concurrency {
            tasks.spawn(tokio::time::timeout(
                SETUP_TIMEOUT,
                open_one(opts.addr, request),
            ));
            started += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(Ok(stream)))) => open.push(stream),
            Some(Ok(Ok(Err(error)))) => {
                failed += 1;
                first_error.get_or_insert(error.to_string());
            }
            Some(Ok(Err(_))) => {
                failed += 1;
                first_error.get_or_insert("timed out".to_owned());
            }
            Some(Err(error)) => {
                failed += 1;
                first_error.get_or_insert(error.to_string());
            }
            None => break,
        }
    }
    println!("READY {} {}", open.len(), failed);
    if let Some(error) = first_error {
        eprintln!("idle_clients: first failure: {error}");
    }
    tokio::time::sleep(opts.hold).await;
    let mut byte = [0u8; 1];
    let still_open = open
        .iter()
        .filter(|s| matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    println!("STILL_OPEN {still_open}");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let opts = match options() {
        Ok(opts) => opts,
        Err(error) => {
            eprintln!("idle_clients: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("idle_clients: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(opts))
}
