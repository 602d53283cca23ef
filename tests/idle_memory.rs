//! What a parked idle HTTP/1.1 connection keeps on the heap. The process's
//! allocations are counted (bytes requested and not freed), so this test has a
//! binary of its own: no other test allocates meanwhile.

mod common;

use std::io::{Read, Write};

use common::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const CONNECTIONS: usize = 200;
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n";

/// Opens `count` connections (std sockets: nothing of theirs on the heap),
/// each sending one request and reading its answer whole.
fn idle_clients(proxy: std::net::SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(proxy).expect("connect");
            stream.write_all(GET).expect("write");
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            // The backend's answer ends with its body, "idle".
            for _ in 0..100 {
                if answer.ends_with(b"idle") {
                    break;
                }
                let n = stream.read(&mut buf).expect("read");
                assert!(n > 0, "closed early");
                answer.extend_from_slice(&buf[..n]);
            }
            assert!(answer.starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect()
}

/// Frees what the backend recorded of the requests it received.
fn forget_requests(app: &Backend) {
    let mut requests = app.requests.lock().expect("requests");
    *requests = Vec::new();
}

#[tokio::test]
async fn a_parked_connection_keeps_under_one_and_a_quarter_kib_on_the_heap() {
    let app = spawn_backend("idle").await;
    let proxy = spawn_proxy(&one_upstream("round_robin", &[server(app.addr)], "")).await;
    let addr = proxy.addr;
    // Warm: the upstream connection, the blocking pool's thread, lazy statics.
    let warm = tokio::task::spawn_blocking(move || idle_clients(addr, 1))
        .await
        .expect("clients");
    wait_until(|| proxy.connections_parked() == 1).await;

    forget_requests(&app);
    let region = Region::new(ALLOCATOR);
    let clients = tokio::task::spawn_blocking(move || idle_clients(addr, CONNECTIONS))
        .await
        .expect("clients");
    wait_until(|| proxy.connections_parked() == 1 + CONNECTIONS as i64).await;
    forget_requests(&app);
    let change = region.change();

    // (`bytes_allocated` and `bytes_deallocated` include what reallocations changed.)
    let held = change.bytes_allocated as isize
        - change.bytes_deallocated as isize
        - std::mem::size_of_val(clients.as_slice()) as isize;
    let per_connection = held / CONNECTIONS as isize;
    println!("heap per parked connection: {per_connection} bytes");
    assert!(
        per_connection <= 1280,
        "a parked connection keeps {per_connection} bytes"
    );
    drop((warm, clients));
}
