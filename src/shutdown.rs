//! Stopping the server on SIGINT or SIGTERM, in every phase of its life.
//!
//! The handlers are registered synchronously by [`Shutdown::on_signals`], the
//! first thing `serve` does: a signal that arrives while the store opens, the
//! admin is bootstrapped or leases are taken is caught, not left to the
//! default action (which kills the process without releasing leases). Every
//! task gets a [`watch::Receiver`] that turns `true` once; waiting on it
//! returns at once when the stop came before the wait began.

use std::future::Future;

use tokio::sync::watch;

/// The server's stop request, shared by every phase and task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Catches SIGINT and SIGTERM from now on. Must run inside the runtime.
    pub fn on_signals() -> std::io::Result<Self> {
        let (tx, requested) = watch::channel(false);
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
                let _ = tx.send(true);
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("shutting down");
                let _ = tx.send(true);
            }
        });
        Ok(Self { requested })
    }

    /// A stop that only [`Shutdown::trigger`] sets off (for tests).
    #[cfg(test)]
    fn manual() -> (watch::Sender<bool>, Self) {
        let (tx, requested) = watch::channel(false);
        (tx, Self { requested })
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// For a task's loop: turns `true` when a stop is requested.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.requested.clone()
    }

    /// Returns once a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.requested.clone();
        // An error means the signal task is gone, which only happens when
        // the runtime shuts down: treat it as a stop.
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
        let (tx, stop) = Shutdown::manual();
        tx.send(true).unwrap();
        assert!(stop.requested());
        tokio::time::timeout(Duration::from_secs(5), stop.wait())
            .await
            .expect("wait returns at once after a stop");
        let ran = stop.unless_stopped(async { 1 }).await;
        assert_eq!(ran, None, "no phase starts after a stop");
    }

    #[tokio::test]
    async fn a_phase_is_abandoned_when_the_stop_comes() {
        let (tx, stop) = Shutdown::manual();
        let phase = stop.unless_stopped(std::future::pending::<()>());
        let trigger = async {
            tokio::task::yield_now().await;
            tx.send(true).unwrap();
        };
        let (out, ()) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(phase, trigger)
        })
        .await
        .expect("the phase ends with the stop");
        assert_eq!(out, None);
        assert_eq!(stop.unless_stopped(async { 2 }).await, None);
        let (_tx, running) = Shutdown::manual();
        assert_eq!(running.unless_stopped(async { 3 }).await, Some(3));
    }
}
