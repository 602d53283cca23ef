//! Writes a large weir config to stdout, for `benches/reload.sh`.
//!
//! ```text
//! gen_config [--routes 10000] [--servers 1000] [--upstreams 10] [--listen 127.0.0.1:8080]
//!            [--hot 127.0.0.1:3000,127.0.0.1:3001] [--threads 1] [--variant 0]
//! ```
//!
//! The shape is described in `benches/support/big_config.rs`: the catch-all `/`
//! route goes to `hot` (the real backends given with `--hot`); every other
//! route goes to upstreams whose 127.0.0.1:1..=N servers are never contacted.
//! Two `--variant`s differ in weights and timeouts, so a reload between them
//! rebuilds everything.

#[path = "../benches/support/big_config.rs"]
mod big_config;

use std::process::ExitCode;

use big_config::Shape;

fn main() -> ExitCode {
    let mut shape = Shape::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("gen_config: {flag} needs a value (see the source for usage)");
            return ExitCode::from(2);
        };
        let number = || value.parse::<usize>().ok();
        let ok = match flag.as_str() {
            "--routes" => number().filter(|&n| n > 0).map(|n| shape.routes = n),
            "--servers" => number().filter(|&n| n > 0).map(|n| shape.servers = n),
            "--upstreams" => number().filter(|&n| n > 0).map(|n| shape.upstreams = n),
            "--threads" => number().map(|n| shape.threads = n),
            "--variant" => value.parse().ok().map(|n| shape.variant = n),
            "--listen" => {
                shape.listen = value.clone();
                Some(())
            }
            "--hot" => {
                shape.hot = value.split(',').map(str::to_owned).collect();
                Some(())
            }
            _ => None,
        };
        if ok.is_none() {
            eprintln!("gen_config: bad option or value: {flag} {value}");
            return ExitCode::from(2);
        }
    }
    print!("{}", big_config::generate(&shape));
    ExitCode::SUCCESS
}
