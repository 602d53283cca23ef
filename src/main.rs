//! The `weir` command: parses arguments, sets up logging, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, with its background purging thread switched on in `main`: freed
/// pages go back to the system within about ten seconds whatever the process
/// does meanwhile. With 10,000 parked idle connections, RSS settles at 1.7 to 1.9
/// KiB per connection (`benches/idle_conns.sh`). mimalloc v2 purges only when the
/// allocating thread is busy, so after a burst its RSS stayed at 9.4–22.7 KiB per
/// connection depending on how the burst arrived; it cost about 1% less CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A reverse-proxy load balancer.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy in the foreground.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "/etc/weir/weir.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print a summary.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "/etc/weir/weir.toml")]
        config: PathBuf,
    },
    /// Run three demo apps on 127.0.0.1:3000-3002, the proxy on 127.0.0.1:8080
    /// and its status page on 127.0.0.1:9090.
    Demo,
}

fn main() -> ExitCode {
    // Without it, jemalloc purges only while allocating: a burst's pages would
    // stay resident once the connections go idle. Not fatal if unavailable.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            match weir::config::load(&config)
                .and_then(|cfg| weir::server::tls::check(&cfg).map(|()| cfg))
            {
                Ok(cfg) => {
                    let names = match weir::cli::check_names(&cfg) {
                        Ok(names) => names,
                        Err(error) => {
                            for line in error.lines() {
                                eprintln!("{}: {line}", config.display());
                            }
                            return ExitCode::from(1);
                        }
                    };
                    // A closed pipe (`weir check | head`) is not an error worth a panic.
                    let out = format!("{}: ok\n{}{names}", config.display(), cfg.summary());
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run { config } => match weir::config::load(&config) {
            Ok(cfg) => run(cfg.server.threads, |w| weir::cli::run(config, cfg, w)),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(1)
            }
        },
        Command::Demo => match weir::demo::config() {
            Ok(cfg) => run(cfg.server.threads, |w| weir::cli::demo(cfg, w)),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(1)
            }
        },
    }
}

fn run<F>(threads: usize, task: impl FnOnce(weir::runtime::Workers) -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let workers = match weir::cli::workers(threads) {
        Ok(workers) => workers,
        Err(error) => {
            eprintln!("cannot start the worker threads: {error}");
            return ExitCode::from(1);
        }
    };
    // Control, health checks and admin run here; with `threads = 1`, connections too.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(task(workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(1)
        }
    }
}
