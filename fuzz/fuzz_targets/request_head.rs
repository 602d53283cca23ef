//! The request path of a live weir: each input goes, as it is, on a fresh
//! connection to a weir started once in this process, with short timeouts.
//! Its backend checks that every request head weir forwards parses with
//! httparse as HTTP/1.1 and carries weir's `X-Forwarded-For`. A panic on any
//! thread aborts the process, so libFuzzer reports it; so does a connection
//! weir keeps open past its timeouts.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest weir may take to answer or close once the client has sent
/// everything and closed its side: the timeouts below, with room to spare.
const HANG_LIMIT: Duration = Duration::from_secs(5);

#[path = "live.rs"]
mod live;

use live::Live;

fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(|| live::start(serve_backend))
}

/// Reads each request head weir forwards, checks it, and answers 200 with
/// `Connection: close`.
async fn serve_backend(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 256];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&head) {
                    Ok(httparse::Status::Complete(_)) => {
                        assert_eq!(req.version, Some(1), "{:?}", String::from_utf8_lossy(&head));
                        let forwarded_for: Vec<&[u8]> = req
                            .headers
                            .iter()
                            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
                            .map(|h| h.value)
                            .collect();
                        assert_eq!(forwarded_for, [b"127.0.0.1"], "{:?}", String::from_utf8_lossy(&head));
                        break;
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => panic!("weir forwarded a head httparse refuses ({e}): {:?}", String::from_utf8_lossy(&head)),
                }
                if !matches!(stream.read_buf(&mut head).await, Ok(n) if n > 0) {
                    return;
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let live = live();
    live.rt.block_on(async {
        let talk = async {
            let mut stream = TcpStream::connect(live.addr).await.expect("connect");
            if stream.write_all(data).await.is_ok() {
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
