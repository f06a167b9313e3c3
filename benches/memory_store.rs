//! `cargo bench --bench memory_store`: does the in-memory store ever stall the relay? Four
//! tasks on a 2-worker runtime start 500 000 sessions as fast as they can, each with its code
//! image (5.5 KB, as a link code) — the maps grow through every doubling — and then keep
//! starting sessions at 3 000/s for 25 s, past the moments when records fall due for expiry
//! sweeping, with the store full. A probe reads one session every millisecond throughout and
//! records how long each read took, lock wait and scheduling included — what any request (or
//! `/healthz`) on those workers would have waited. The probe's waits are printed per phase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use qrlogin_relay::session::{ClientInfo, LoginSession, SceneId, unix_now};
use qrlogin_relay::store::SessionStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SESSIONS: usize = 500_000;
const WRITERS: usize = 4;
/// The steady phase: starts per second (all writers) and how long.
const STEADY_RATE: u64 = 3000;
const STEADY_FOR: Duration = Duration::from_secs(25);
/// A link code's size.
const CODE_BYTES: usize = 5500;
/// Sessions live long enough to stay for the whole run; their codes expire sooner, so the
/// steady phase meets records falling due.
const SESSION_TTL_SECS: u64 = 3600;
const CODE_TTL_SECS: u64 = 12;

fn session() -> LoginSession {
    let client = ClientInfo {
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0".into(),
    };
    LoginSession::start(SceneId::random(), "default", client, unix_now(), SESSION_TTL_SECS).0
}

async fn start(store: &SessionStore, code: &[u8]) {
    let session = session();
    store.insert(&session).await.unwrap();
    store.put_code(&session.id, code, CODE_TTL_SECS).await.unwrap();
}

/// Runs `writer` as `WRITERS` tasks and waits for them all.
async fn writers<F: Future<Output = ()> + Send + 'static>(writer: impl Fn() -> F) {
    let tasks: Vec<_> = (0..WRITERS).map(|_| tokio::spawn(writer())).collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// The probe's waits, sorted: p50 / p99 / max.
fn waits_row(what: &str, mut waits: Vec<Duration>) {
    waits.sort();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "| {what}: {} probe reads, wait p50 / p99 / max | {:.3} / {:.3} / {:.3} ms |",
        waits.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SessionStore::memory(300);
        let probe_target = session();
        store.insert(&probe_target).await.unwrap();
        let code = Arc::new(vec![7u8; CODE_BYTES]);
        let (filled, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let probe = {
            let (store, filled, done) = (store.clone(), filled.clone(), done.clone());
            tokio::spawn(async move {
                let (mut filling, mut steady) = (Vec::new(), Vec::new());
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while !done.load(Ordering::Relaxed) {
                    let due = tick.tick().await;
                    store.get(&probe_target.id).await.unwrap().unwrap();
                    let waits = if filled.load(Ordering::Relaxed) {
                        &mut steady
                    } else {
                        &mut filling
                    };
                    waits.push(due.elapsed());
                }
                (filling, steady)
            })
        };
        let started = Instant::now();
        writers(|| {
            let (store, code) = (store.clone(), code.clone());
            async move {
                for _ in 0..SESSIONS / WRITERS {
                    start(&store, &code).await;
                    tokio::task::yield_now().await;
                }
            }
        })
        .await;
        let took = started.elapsed();
        filled.store(true, Ordering::Relaxed);
        let steady_started = Instant::now();
        writers(|| {
            let (store, code) = (store.clone(), code.clone());
            async move {
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 * WRITERS as u64 / STEADY_RATE));
                while steady_started.elapsed() < STEADY_FOR {
                    tick.tick().await;
                    start(&store, &code).await;
                }
            }
        })
        .await;
        done.store(true, Ordering::Relaxed);
        let (filling, steady) = probe.await.unwrap();
        println!("| scenario | memory store, 2 workers |");
        println!("|---|---|");
        println!(
            "| sessions started with their codes | {SESSIONS} in {:.2} s ({:.0}/s) |",
            took.as_secs_f64(),
            SESSIONS as f64 / took.as_secs_f64()
        );
        waits_row("while filling", filling);
        waits_row(
            &format!(
                "then {STEADY_RATE} starts/s for {} s, the store full",
                STEADY_FOR.as_secs()
            ),
            steady,
        );
    });
}
