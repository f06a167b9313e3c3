//! Rate limits (DESIGN.md §6): session starts per client IP; mini-program calls per client IP
//! and scan attempts per session (both before any WeChat call), and per WeChat user. Fixed
//! one-minute windows counted in the store, so every instance shares them.

use crate::error::ApiError;
use crate::session::unix_now;
use crate::store::SessionStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const WINDOW_SECS: u64 = 60;

#[derive(Clone)]
pub struct RateLimits {
    pub sessions_per_ip: u64,
    pub calls_per_openid: u64,
    pub mini_program_calls_per_ip: u64,
    pub scans_per_session: u64,
}

impl RateLimits {
    /// A PC page at `ip` starts a session.
    pub async fn session_start(&self, store: &SessionStore, ip: &str) -> Result<(), ApiError> {
        check(store, "sessions_per_ip_per_minute", ip, self.sessions_per_ip).await
    }

    /// The mini-program at `ip` calls; for a scan, of session `scene`. Checked before WeChat is.
    pub async fn mini_program_request(
        &self,
        store: &SessionStore,
        ip: &str,
        scan_of: Option<&str>,
    ) -> Result<(), ApiError> {
        check(
            store,
            "mini_program_calls_per_ip_per_minute",
            ip,
            self.mini_program_calls_per_ip,
        )
        .await?;
        match scan_of {
            Some(scene) => {
                check(
                    store,
                    "scans_per_session_per_minute",
                    scene,
                    self.scans_per_session,
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// The mini-program calls on behalf of `openid`.
    pub async fn mini_program_call(&self, store: &SessionStore, openid: &str) -> Result<(), ApiError> {
        check(
            store,
            "calls_per_openid_per_minute",
            openid,
            self.calls_per_openid,
        )
        .await
    }
}

/// Counts one request of `subject` against the setting named `kind`.
async fn check(store: &SessionStore, kind: &'static str, subject: &str, limit: u64) -> Result<(), ApiError> {
    if limit == 0 {
        return Ok(());
    }
    let now = unix_now();
    let window = now / WINDOW_SECS;
    let count = store
        .count(&format!("rate:{kind}:{subject}:{window}"), WINDOW_SECS)
        .await?;
    if count > limit {
        return Err(ApiError::rate_limited(kind, WINDOW_SECS - now % WINDOW_SECS));
    }
    Ok(())
}

/// How long a client over an open-connection cap is asked to wait.
const CAP_RETRY_SECS: u64 = 5;

/// File descriptors kept for everything but waiting browsers: health checks, ordinary
/// requests, Redis, WeChat, logs.
pub const RESERVED_FILES: u64 = 1024;

/// Raises this process's soft open-file limit to its hard limit; returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    }
}

/// Caps on what is held open on this instance at once: WebSockets per IP and per session,
/// long-polls per IP (429 past them), and all WebSockets and long-polls together (503 past
/// it, so the server never runs out of file descriptors). 0: no cap. What is held is released
/// when its [`Held`] drops.
#[derive(Clone)]
pub struct OpenCaps {
    pub websockets_per_ip: usize,
    pub websockets_per_session: usize,
    pub long_polls_per_ip: usize,
    pub max_open: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open socket or long-poll, counted until dropped.
pub struct Held {
    key: Option<String>,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&key);
                crate::maps::shrink_if_sparse(&mut held);
            }
        }
    }
}

impl OpenCaps {
    pub fn new(
        websockets_per_ip: usize,
        websockets_per_session: usize,
        long_polls_per_ip: usize,
        max_open: usize,
    ) -> Self {
        Self {
            websockets_per_ip,
            websockets_per_session,
            long_polls_per_ip,
            max_open,
            held: Arc::default(),
        }
    }

    /// A WebSocket from `ip` on `session`: the instance's cap (`503`), then the client's
    /// (`429`), each with `Retry-After`.
    pub fn websocket(&self, ip: &str, session: &str) -> Result<[Held; 3], ApiError> {
        Ok([
            self.hold_open()?,
            self.hold(format!("ws-ip:{ip}"), self.websockets_per_ip, "websockets_per_ip")?,
            self.hold(
                format!("ws-session:{session}"),
                self.websockets_per_session,
                "websockets_per_session",
            )?,
        ])
    }

    /// A long-poll from `ip`.
    pub fn long_poll(&self, ip: &str) -> Result<[Held; 2], ApiError> {
        Ok([
            self.hold_open()?,
            self.hold(
                format!("poll-ip:{ip}"),
                self.long_polls_per_ip,
                "long_polls_per_ip",
            )?,
        ])
    }

    fn hold_open(&self) -> Result<Held, ApiError> {
        self.hold("open".into(), self.max_open, "max_open_sockets")
            .map_err(|_| ApiError {
                retry_after: Some(CAP_RETRY_SECS),
                limit: Some("max_open_sockets"),
                ..ApiError::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    "This server holds as many waiting browsers as it can; retry shortly.",
                )
            })
    }

    fn hold(&self, key: String, cap: usize, name: &'static str) -> Result<Held, ApiError> {
        if cap == 0 {
            return Ok(Held {
                key: None,
                held: self.held.clone(),
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.clone()).or_default();
        if *count >= cap {
            return Err(ApiError::rate_limited(name, CAP_RETRY_SECS));
        }
        *count += 1;
        Ok(Held {
            key: Some(key),
            held: self.held.clone(),
        })
    }

    /// What is held now (for tests).
    pub fn open(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// WebSockets open now (counted while the per-session cap is on, as it is by default).
    pub fn open_websockets(&self) -> usize {
        self.open_with_prefix("ws-session:")
    }

    /// Long-polls waiting now (counted while the per-IP cap is on, as it is by default).
    pub fn open_long_polls(&self) -> usize {
        self.open_with_prefix("poll-ip:")
    }

    fn open_with_prefix(&self, prefix: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_released_when_what_it_held_closes() {
        let caps = OpenCaps::new(2, 1, 1, 0);
        let first = caps.websocket("1.2.3.4", "s1").unwrap();
        assert!(caps.websocket("1.2.3.4", "s1").is_err(), "one socket per session");
        let second = caps.websocket("1.2.3.4", "s2").unwrap();
        assert!(caps.websocket("1.2.3.4", "s3").is_err(), "two per IP");
        drop(first);
        assert!(caps.websocket("1.2.3.4", "s1").is_ok());
        drop(second);
        let poll = caps.long_poll("1.2.3.4").unwrap();
        assert!(caps.long_poll("1.2.3.4").is_err());
        drop(poll);
        assert_eq!(caps.open(), 0);
    }

    #[test]
    fn past_the_instance_cap_everyone_is_told_the_server_is_busy() {
        let caps = OpenCaps::new(0, 0, 0, 2);
        let held = (
            caps.websocket("1.1.1.1", "a").unwrap(),
            caps.long_poll("2.2.2.2").unwrap(),
        );
        let refused = caps.websocket("3.3.3.3", "b").err().unwrap();
        assert_eq!((refused.status.as_u16(), refused.code), (503, "server_busy"));
        drop(held);
        assert!(caps.websocket("3.3.3.3", "b").is_ok());
    }
}
