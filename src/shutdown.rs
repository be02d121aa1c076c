//! Stopping the server on SIGINT or SIGTERM, in every phase of its life.
//!
//! The handlers are registered synchronously by [`Shutdown::on_signals`], the
//! first thing `serve` does: a signal that arrives while the store opens, the
//! admin is bootstrapped or leases are taken is caught, not left to the
//! default action (which kills the process without releasing leases).
//! Waiting on it returns at once when the stop came before the wait began.

use std::{future::Future, sync::Arc};

use tokio::sync::watch;

/// The server's stop request, shared by every phase and task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: Arc<watch::Sender<bool>>,
    /// When the first stop request came.
    at: Arc<std::sync::OnceLock<std::time::Instant>>,
}

fn fire(requested: &watch::Sender<bool>, at: &std::sync::OnceLock<std::time::Instant>) {
    at.get_or_init(std::time::Instant::now);
    requested.send_replace(true);
}

impl Shutdown {
    /// Catches SIGINT and SIGTERM from now on. Must run inside the runtime.
    pub fn on_signals() -> std::io::Result<Self> {
        let requested = Arc::new(watch::Sender::new(false));
        let at = Arc::new(std::sync::OnceLock::new());
        let (tx, fired_at) = (requested.clone(), at.clone());
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // `signal` registers the handler when called, not when polled.
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "shutting down");
                fire(&tx, &fired_at);
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutting down");
                fire(&tx, &fired_at);
            }
        });
        Ok(Self { requested, at })
    }

    /// A stop that only [`Shutdown::request`] sets off (for tests).
    #[cfg(test)]
    fn manual() -> Self {
        Self {
            requested: Arc::new(watch::Sender::new(false)),
            at: Arc::default(),
        }
    }

    /// Asks for a stop, as a signal does.
    pub fn request(&self) {
        fire(&self.requested, &self.at);
    }

    /// When the stop was first requested, if it was.
    pub fn requested_at(&self) -> Option<std::time::Instant> {
        self.at.get().copied()
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Returns once a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.requested.subscribe();
        // The sender lives as long as `self`: an error cannot happen.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Runs a start-up phase unless a stop comes first: `None` means stop.
    /// A phase abandoned this way leaves nothing half-done that the next
    /// start would not redo (each phase is idempotent).
    pub async fn unless_stopped<T>(&self, phase: impl Future<Output = T>) -> Option<T> {
        if self.requested() {
            return None;
        }
        tokio::select! {
            biased;
            () = self.wait() => None,
            out = phase => Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_stop_before_the_wait_is_seen() {
        let stop = Shutdown::manual();
        stop.request();
        assert!(stop.requested());
        tokio::time::timeout(Duration::from_secs(5), stop.wait())
            .await
            .expect("wait returns at once after a stop");
        let ran = stop.unless_stopped(async { 1 }).await;
        assert_eq!(ran, None, "no phase starts after a stop");
    }

    #[tokio::test]
    async fn a_phase_is_abandoned_when_the_stop_comes() {
        let stop = Shutdown::manual();
        let phase = stop.unless_stopped(std::future::pending::<()>());
        let trigger = async {
            tokio::task::yield_now().await;
            stop.request();
        };
        let (out, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(phase, trigger)
        })
        .await
        .expect("the phase ends with the stop");
        assert_eq!(out, None);
        assert_eq!(stop.unless_stopped(async { 2 }).await, None);
        let running = Shutdown::manual();
        assert_eq!(running.unless_stopped(async { 3 }).await, Some(3));
    }
}
