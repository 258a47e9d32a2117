//! `parley-bench`: creates and seeds a fresh database, starts the real `parley serve` binary
//! on it, drives it over HTTP with an open-loop load generator, runs pgbench with the same
//! SQL statements for the raw ceiling, and reports a table (Markdown) and JSON.
//!
//! ```text
//! cargo build --release -p parley-api
//! cargo run --release -p parley-bench -- --database-url postgres://postgres@127.0.0.1:5432/test --scale 10000
//! cargo run -p parley-bench -- --smoke --parley-bin target/debug/parley
//! cargo run --release -p parley-bench -- --database-url postgres://postgres@127.0.0.1:5432/test --engines postgres --burst 1000
//! cargo run --release -p parley-bench -- --database-url postgres://postgres@127.0.0.1:5432/test --engines postgres --subscribe 1000
//! cargo run --release -p parley-bench -- --database-url postgres://postgres@127.0.0.1:5432/test --peer
//! cargo run --release -p parley-bench -- --database-url postgres://postgres@127.0.0.1:5432/test --search
//! ```

mod burst;
mod cli;
mod db;
mod load;
mod machine;
mod peer;
mod pgbench;
mod report;
mod run;
mod search;
mod server;
mod subscribe;
mod workload;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    // One thread: the generator shares two cores with the server and the database, so it
    // keeps to one and stays out of their way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run::main(args))
}
