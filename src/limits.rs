//! Rate limits (DESIGN.md §6): session starts per client IP; mini-program calls per client IP
//! and scan attempts per session (both before any WeChat call), and per WeChat user. Fixed
//! one-minute windows counted in the store, so every instance shares them.

use crate::error::ApiError;
use crate::session::unix_now;
use crate::store::SessionStore;

const WINDOW_SECS: u64 = 60;

pub struct RateLimits {
    pub sessions_per_ip: u64,
    pub calls_per_openid: u64,
    pub mini_program_calls_per_ip: u64,
    pub scans_per_session: u64,
}

impl RateLimits {
    /// A PC page at `ip` starts a session.
    pub async fn session_start(&self, store: &SessionStore, ip: &str) -> Result<(), ApiError> {
        check(store, "sessions-per-ip", ip, self.sessions_per_ip).await
    }

    /// The mini-program at `ip` calls; for a scan, of session `scene`. Checked before WeChat is.
    pub async fn mini_program_request(
        &self,
        store: &SessionStore,
        ip: &str,
        scan_of: Option<&str>,
    ) -> Result<(), ApiError> {
        check(store, "mp-calls-per-ip", ip, self.mini_program_calls_per_ip).await?;
        match scan_of {
            Some(scene) => check(store, "scans-per-session", scene, self.scans_per_session).await,
            None => Ok(()),
        }
    }

    /// The mini-program calls on behalf of `openid`.
    pub async fn mini_program_call(&self, store: &SessionStore, openid: &str) -> Result<(), ApiError> {
        check(store, "calls-per-openid", openid, self.calls_per_openid).await
    }
}

async fn check(store: &SessionStore, kind: &str, subject: &str, limit: u64) -> Result<(), ApiError> {
    if limit == 0 {
        return Ok(());
    }
    let now = unix_now();
    let window = now / WINDOW_SECS;
    let count = store
        .count(&format!("rate:{kind}:{subject}:{window}"), WINDOW_SECS)
        .await?;
    if count > limit {
        return Err(ApiError::rate_limited(WINDOW_SECS - now % WINDOW_SECS));
    }
    Ok(())
}
