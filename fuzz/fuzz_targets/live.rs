//! A weir started once per fuzzing process, with short timeouts, in front of
//! a backend each target serves its own way. Shared by the targets that
//! drive a live weir (`#[path]`-included: each target is a binary of its own).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use weir::daemon::{Control, Daemon};

/// The weir under test, its runtime, and the sender that keeps it running.
pub struct Live {
    pub rt: Runtime,
    pub addr: SocketAddr,
    _control: mpsc::Sender<Control>,
}

/// Starts weir on a runtime of its own, its one upstream served by `backend`.
pub fn start<F, Fut>(backend: F) -> Live
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // weir serves each connection in a task, where a panic would only
    // end that task: make every panic a crash libFuzzer sees.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::abort();
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, control) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend_addr = listener.local_addr().expect("backend address");
        tokio::spawn(backend(listener));
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"200ms\"\n\
             idle_timeout = \"300ms\"\n[log]\naccess = \"off\"\n\
             [[upstream]]\nname = \"app\"\nservers = [\"{backend_addr}\"]\n\
             response_timeout = \"1s\"\nrequest_timeout = \"1s\"\n\
             [[route]]\nupstream = \"app\"\n"
        );
        let config = weir::config::parse(&toml, Path::new("fuzz.toml")).expect("config");
        let daemon = Daemon::start("fuzz.toml".into(), config)
            .await
            .expect("weir starts");
        let addr = daemon.local_addrs()[0];
        let (control, controls) = mpsc::channel(1);
        tokio::spawn(daemon.run(controls));
        (addr, control)
    });
    Live {
        rt,
        addr,
        _control: control,
    }
}
