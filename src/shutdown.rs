//! Stopping well: SIGTERM (or Ctrl-C) becomes a signal every long-lived task can await.
//! Waiting browsers are told to reconnect elsewhere (WebSocket close 1012, long-polls answered
//! at once), the pool refiller stops between codes and releases its lock, and requests in
//! flight get the grace period to finish.

use tokio::sync::watch;

/// Held by the server: starts the shutdown once.
pub struct Trigger(watch::Sender<bool>);

/// Held by whatever must react to a shutdown; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    pub fn start(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once the shutdown has started (at once if it already has).
    pub async fn started(&mut self) {
        // An error means the trigger is gone, which only happens once the server has stopped.
        let _ = self.0.wait_for(|started| *started).await;
    }

    pub fn has_started(&self) -> bool {
        *self.0.borrow()
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
