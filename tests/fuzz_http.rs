//! Fuzzing a live weir with property tests: mutated and arbitrary request
//! heads, chunked bodies and HTTP/2 frames, sent over raw sockets. Whatever
//! arrives, weir must not panic, must answer or close within its timeouts,
//! must send the backend only requests it framed itself, and must serve a
//! fresh request afterwards. Bounded: a few hundred cases per kind of input.

mod common;
mod fuzz_inputs;
mod proto_support;

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;
use fuzz_inputs::{chunked, h2_frames, heads};

/// Short limits, so that a stalled client costs a fuzz case little.
const SERVER_KEYS: &str = "header_read_timeout = \"200ms\"\nidle_timeout = \"300ms\"";
const UPSTREAM_KEYS: &str = "response_timeout = \"1s\"\nrequest_timeout = \"1s\"";

/// Longest weir may take to answer or close after the client stops sending:
/// the timeouts above, for up to three pipelined requests, with room to spare
/// on a busy two-core machine.
const HANG_LIMIT: Duration = Duration::from_secs(6);

/// Panics on the threads of the runtimes below, by thread name: weir runs its
/// connections as tasks there, and a panicking task only drops its connection.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A weir in front of a recording backend, on a runtime of its own whose
/// threads carry `name`.
struct Fuzzed {
    name: &'static str,
    backend: RecordingBackend,
    proxy: Proxy,
    rt: tokio::runtime::Runtime,
}

impl Fuzzed {
    fn start(name: &'static str) -> Self {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                if thread.starts_with("fuzz-") {
                    let mut panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
                    panics.push(format!("{thread}: {info}"));
                }
                previous(info);
            }));
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime");
        let (backend, proxy) = rt.block_on(async {
            let backend = spawn_recording_backend().await;
            let toml = config_with(
                "\"127.0.0.1:0\"",
                &[server(backend.addr)],
                UPSTREAM_KEYS,
                SERVER_KEYS,
            );
            let proxy = spawn_proxy(&toml).await;
            (backend, proxy)
        });
        Self {
            name,
            backend,
            proxy,
            rt,
        }
    }

    /// Runs `cases` cases of `inputs`, each sent on `parallel` connections at once.
    fn run<S: Strategy<Value = Vec<u8>>>(
        &self,
        cases: u32,
        parallel: usize,
        half_close: bool,
        inputs: S,
    ) {
        let started = Instant::now();
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let batch = prop::collection::vec(inputs, parallel);
        let result = runner.run(&batch, |batch| {
            self.rt.block_on(self.case(&batch, half_close))
        });
        let forwarded: usize = self
            .backend
            .connections()
            .iter()
            .filter_map(|bytes| weir_framed_requests(bytes).ok())
            .sum();
        eprintln!(
            "{}: {cases} cases of {parallel} connection(s) in {:.1} s; {} fuzzed requests reached the backend",
            self.name,
            started.elapsed().as_secs_f64(),
            // Less the fresh request of each case.
            forwarded.saturating_sub(cases as usize),
        );
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Sends each input on a connection of its own, then checks weir.
    async fn case(&self, batch: &[Vec<u8>], half_close: bool) -> Result<(), TestCaseError> {
        let addr = self.proxy.addr;
        let exchanges = batch.iter().map(|bytes| exchange(addr, bytes, half_close));
        for answer in futures_util::future::join_all(exchanges).await {
            answer.map_err(TestCaseError::fail)?;
        }
        self.check().await
    }

    /// No panic so far, nothing but weir-framed requests at the backend, and a
    /// fresh request served.
    async fn check(&self) -> Result<(), TestCaseError> {
        let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ours: Vec<&String> = panics.iter().filter(|p| p.starts_with(self.name)).collect();
        prop_assert!(ours.is_empty(), "weir panicked: {ours:?}");
        for (i, bytes) in self.backend.connections().iter().enumerate() {
            if let Err(e) = weir_framed_requests(bytes) {
                return Err(TestCaseError::fail(format!("upstream connection {i}: {e}")));
            }
        }
        let fresh = b"GET /fresh HTTP/1.1\r\nHost: fresh.test\r\nConnection: close\r\n\r\n";
        let answer = raw_exchange(self.proxy.addr, fresh).await;
        let answer = answer.ok_or_else(|| TestCaseError::fail("no answer to a fresh request"))?;
        prop_assert_eq!(
            (answer.status, answer.text()),
            (200, "got 0 bytes".to_owned())
        );
        Ok(())
    }
}

/// Sends `bytes`, half-closes when asked, and reads until weir closes.
/// weir may stop reading early (an error answer ends the connection), so a
/// failed write is no failure; only not closing in time is.
async fn exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    half_close: bool,
) -> Result<(), String> {
    let talk = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        if stream.write_all(bytes).await.is_ok() && half_close {
            let _ = stream.shutdown().await;
        }
        let mut answer = Vec::new();
        while let Ok(n) = stream.read_buf(&mut answer).await {
            if n == 0 {
                break;
            }
        }
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(HANG_LIMIT, talk).await.map_err(|_| {
        format!(
            "weir neither closed nor finished within {HANG_LIMIT:?} after {}",
            excerpt(bytes)
        )
    })??;
    // An answer to HTTP/1 starts with a well-formed response head (it may be
    // cut short: a close with unread input resets the connection).
    if answer.starts_with(b"HTTP/") {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        if let Err(e) = httparse::Response::new(&mut headers).parse(&answer) {
            return Err(format!(
                "malformed answer ({e}): {} to {}",
                excerpt(&answer),
                excerpt(bytes)
            ));
        }
    }
    Ok(())
}

fn excerpt(bytes: &[u8]) -> String {
    format!(
        "{:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(400)])
    )
}

#[test]
fn mutated_request_heads_are_answered_or_refused_never_forwarded_unframed() {
    Fuzzed::start("fuzz-heads").run(600, 1, true, heads());
}

#[test]
fn mutated_chunked_bodies_are_answered_or_refused_never_forwarded_unframed() {
    Fuzzed::start("fuzz-chunked").run(400, 1, true, chunked());
}

#[test]
fn odd_http2_frames_are_answered_or_refused_never_forwarded_unframed() {
    let fuzzed = Fuzzed::start("fuzz-h2");
    fuzzed.run(400, 1, false, h2_frames());
    // HTTP/2 still works too.
    fuzzed.rt.block_on(async {
        let stream = TcpStream::connect(fuzzed.proxy.addr)
            .await
            .expect("connect");
        let mut h2 = proto_support::h2_client(stream).await;
        let (status, body, _) = proto_support::h2_get(&mut h2, "http://fresh.test/h2").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "got 0 bytes"));
    });
}

#[test]
fn clients_that_stall_are_cut_off_within_the_timeouts() {
    // No half-close: whatever weir is waiting for never comes, so each
    // connection ends only by one of weir's timeouts.
    let any_input = prop_oneof![heads(), chunked(), h2_frames()];
    Fuzzed::start("fuzz-stall").run(16, 8, false, any_input);
}

#[test]
fn the_framing_check_refuses_bytes_weir_would_not_send() {
    let head = "POST /a HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 127.0.0.1\r\n\
                x-real-ip: 127.0.0.1\r\nx-forwarded-proto: http\r\n";
    let framed = format!(
        "{head}content-length: 3\r\n\r\nabc\
         {head}transfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nt: 1\r\n\r\n"
    );
    assert_eq!(weir_framed_requests(framed.as_bytes()), Ok(2));
    // Cut short anywhere, it is still only what weir framed.
    for end in 0..framed.len() {
        assert!(weir_framed_requests(&framed.as_bytes()[..end]).is_ok());
    }
    let second_head = framed.rfind("POST").unwrap_or(0) + head.len() + 30;
    assert_eq!(
        weir_framed_requests(&framed.as_bytes()[..second_head]),
        Ok(2)
    );
    for unframed in [
        format!("{head}content-length: 3\r\n\r\nabcd\r\n\r\n"),
        format!("{head}content-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
        format!("{head}content-length: 3\r\ncontent-length: 3\r\n\r\nabc"),
        format!("{head}transfer-encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding: gzip\r\n\r\n"),
        format!("{head}content-length: +3\r\n\r\nabc"),
        head.replace("HTTP/1.1", "HTTP/1.0") + "\r\n",
        head.replace("x-real-ip: 127.0.0.1\r\n", "") + "\r\n",
        head.replace("127.0.0.1", "10.0.0.1") + "\r\n",
    ] {
        assert!(
            weir_framed_requests(unframed.as_bytes()).is_err(),
            "{unframed:?}"
        );
    }
}

/// Found by `odd_http2_frames_…`: a client that sets INITIAL_WINDOW_SIZE to 0
/// and never opens a window gets its GET forwarded, but weir can never send
/// the response body, and no timeout ends the stream: the connection (and
/// its slot under `max_connections`) stays as long as the client likes.
#[test]
#[ignore = "weir has no bound on an HTTP/2 response the client grants no window for"]
fn an_http2_client_granting_no_window_is_cut_off() {
    let fuzzed = Fuzzed::start("fuzz-window");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // SETTINGS INITIAL_WINDOW_SIZE=0; HEADERS GET / on stream 1 (END_STREAM, END_HEADERS).
    let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0];
    let headers = [
        &[0, 0, 14, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41, 9][..],
        b"fuzz.test",
    ]
    .concat();
    let bytes = [&preface[..], &settings, &headers].concat();
    let result = fuzzed
        .rt
        .block_on(exchange(fuzzed.proxy.addr, &bytes, false));
    assert_eq!(result, Ok(()));
}
