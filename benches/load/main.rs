//! The load tool: the WeChat simulator, the relays and their store each in their own
//! processes, driven over real HTTP and WebSockets from here. Every scenario prints a table.
//!
//! `cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]`: the code
//! pool under a sustained start rate (`getwxacodeunlimit` delayed like WeChat's 100–300 ms):
//! how many starts were served from the pool.
//!
//! `cargo bench --bench load -- sockets [--sockets 5000] [--logins 200] [--in-flight 1]
//! [--instances 2] [--store redis|cluster|memory]`: N browsers wait on WebSockets over k
//! instances, then M complete logins (start, code, socket, scan, confirm, redeem; page and
//! phone on different instances), `--in-flight` at a time, while all stay connected: relay
//! RSS per idle socket, push latency (confirm answered → `confirmed` frame read), relay CPU per
//! login (from `/proc`), pool hits, errors by kind, and the RSS a minute after every browser
//! left.
//!
//! `cargo bench --bench load -- creates [--sessions 500000] [--rate 3000] [--clients 32] [--store memory]`:
//! a sustained run of session starts while a probe times `/healthz` every 10 ms.
//!
//! `cargo bench --bench load -- compare [--seconds 3] [--clients 32]`: status reads and
//! warm-pool session starts against the relay on Redis, beside the same requests against a bare
//! actix-web handler doing one Redis GET, with the ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod compare;
mod creates;
mod parts;
mod pool;
mod sockets;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("pool") => pool::run(&args).await,
        Some("sockets") => sockets::run(&args).await,
        Some("creates") => creates::run(&args).await,
        Some("compare") => compare::run(&args).await,
        // The tool's own helpers, run as child processes.
        Some("browsers") => sockets::browsers(&args).await,
        Some("bare-server") => compare::bare_server(&args).await,
        _ => println!(
            "usage: cargo bench --bench load -- pool [--rate 60] [--seconds 20] [--latency-ms 200]\n       \
             cargo bench --bench load -- sockets [--sockets 5000] [--logins 200] [--in-flight 1] [--instances 2] [--store redis|cluster|memory]\n       \
             cargo bench --bench load -- creates [--sessions 500000] [--rate 3000] [--clients 32] [--store memory|redis|cluster]\n       \
             cargo bench --bench load -- compare [--seconds 3] [--clients 32]"
        ),
    }
}
