//! weir's HTTP/1.1 client against an upstream that answers with arbitrary
//! bytes: each input is what a live in-process weir's backend writes back to
//! every request it gets, on connections it keeps open. A client sends two
//! requests on one connection and reads until weir closes. A panic on any
//! thread aborts the process, so libFuzzer reports it; so does a client
//! connection weir keeps open past its timeouts.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest weir may take to answer or close both requests: the timeouts
/// below, twice, with room to spare.
const HANG_LIMIT: Duration = Duration::from_secs(6);

/// What the backend answers with, this run.
static ANSWER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

#[path = "live.rs"]
mod live;

use live::Live;

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| live::start(serve_backend))
}

/// Answers every request head it reads with the current input, as it is.
async fn serve_backend(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 256];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&head) {
                    Ok(httparse::Status::Complete(len)) => {
                        head.drain(..len);
                        let answer = ANSWER.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return,
                }
                if !matches!(stream.read_buf(&mut head).await, Ok(n) if n > 0) {
                    return;
                }
            }
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let live = live();
    *ANSWER.lock().unwrap_or_else(|e| e.into_inner()) = data.to_vec();
    live.rt.block_on(async {
        let talk = async {
            let mut stream = TcpStream::connect(live.addr).await.expect("connect");
            let requests = b"GET /a HTTP/1.1\r\nHost: fuzz.test\r\n\r\n\
                             GET /b HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n";
            if stream.write_all(requests).await.is_ok() {
                let _ = stream.shutdown().await;
            }
            let mut answer = Vec::new();
            while let Ok(n) = stream.read_buf(&mut answer).await {
                if n == 0 {
                    break;
                }
            }
        };
        if tokio::time::timeout(HANG_LIMIT, talk).await.is_err() {
            panic!("weir kept the connection past its timeouts");
        }
    });
});
