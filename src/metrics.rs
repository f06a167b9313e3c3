//! Counters the relay keeps for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub sessions_created: Counter,
    pub scans: Counter,
    pub confirmations: Counter,
    pub cancellations: Counter,
    pub redemptions: Counter,
    pub websockets_opened: Counter,
    pub pool_hits: Counter,
    pub pool_misses: Counter,
    pub pool_refilled: Counter,
    pub pool_refill_errors: Counter,
    pub rate_limited: Counter,
}
