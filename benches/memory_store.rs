//! `cargo bench --bench memory_store`: does the in-memory store ever stall the relay? Four
//! tasks on a 2-worker runtime insert 500 000 sessions as fast as they can (the maps grow
//! through every doubling, and expiry sweeps run), while a probe reads one session every
//! millisecond and records how long each read took, lock wait and scheduling included — what
//! any request (or `/healthz`) on those workers would have waited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use qrlogin_relay::session::{ClientInfo, LoginSession, SceneId, unix_now};
use qrlogin_relay::store::SessionStore;
use std::time::{Duration, Instant};

const SESSIONS: usize = 500_000;
const WRITERS: usize = 4;

fn session() -> LoginSession {
    let client = ClientInfo {
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0".into(),
    };
    LoginSession::start(SceneId::random(), "default", client, unix_now(), 3600).0
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
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let due = tick.tick().await;
                    store.get(&probe_target.id).await.unwrap().unwrap();
                    waits.push(due.elapsed());
                }
                waits
            })
        };
        let started = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..SESSIONS / WRITERS {
                        store.insert(&session()).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut waits = probe.await.unwrap();
        waits.sort();
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
        println!(
            "| sessions inserted | {SESSIONS} in {:.2} s ({:.0}/s) |",
            took.as_secs_f64(),
            SESSIONS as f64 / took.as_secs_f64()
        );
        println!("| probe reads | {} |", waits.len());
        println!(
            "| probe wait p50 / p99 / max | {:.3} / {:.3} / {:.3} ms |",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            waits[waits.len() - 1].as_secs_f64() * 1e3
        );
    });
}
