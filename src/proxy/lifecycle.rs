//! The broker's life: readiness, live sessions, and draining on shutdown.
//!
//! On SIGTERM the broker stops accepting (its listening sockets close, and a
//! successor bound to the same port with `SO_REUSEPORT` takes the new
//! connections), reports not-ready, and lets live sessions finish on their
//! own for up to the drain timeout. Whatever is still open then is closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Shared by the accept loops, every session and the health endpoint.
#[derive(Debug)]
pub struct Lifecycle {
    /// Listening sockets are bound and accepting.
    listening: AtomicBool,
    /// Shutdown has begun: no new sessions, report not-ready.
    draining: AtomicBool,
    /// Sessions alive (from accept to close).
    active: AtomicUsize,
    /// Woken whenever the last session ends.
    idle: Notify,
    /// Set once to tell every remaining session to close now.
    close: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            close: watch::Sender::new(false),
        }
    }
}

impl Lifecycle {
    /// A new lifecycle: not yet listening, no sessions.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Marks the listeners as bound and accepting.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Whether the broker should receive new connections: listening and not
    /// draining. (Routes are loaded before anything listens.)
    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Begins shutdown: readiness turns false.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Sessions alive now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Registers a session; it counts as alive until the guard is dropped.
    pub fn session(self: &Arc<Self>) -> SessionGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        SessionGuard {
            lifecycle: self.clone(),
            close: self.close.subscribe(),
        }
    }

    /// Waits until no session is alive, or `timeout` passes; returns whether
    /// every session ended.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, idle).await.is_ok()
    }

    /// Tells every remaining session to close now.
    pub fn close_all(&self) {
        self.close.send_replace(true);
    }
}

/// One live session's hold on the lifecycle.
#[derive(Debug)]
pub struct SessionGuard {
    lifecycle: Arc<Lifecycle>,
    close: watch::Receiver<bool>,
}

impl SessionGuard {
    /// Completes when the broker tells sessions to close (after the drain
    /// timeout); never completes otherwise.
    pub async fn closing(&mut self) {
        if self.close.wait_for(|close| *close).await.is_err() {
            // The lifecycle is gone only when the process is exiting.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.lifecycle.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.lifecycle.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drains_then_closes() {
        let lifecycle = Lifecycle::new();
        assert!(!lifecycle.is_ready());
        lifecycle.set_listening();
        assert!(lifecycle.is_ready());

        let quick = lifecycle.session();
        let mut slow = lifecycle.session();
        lifecycle.start_draining();
        assert!(!lifecycle.is_ready());
        drop(quick);
        assert!(!lifecycle.wait_idle(Duration::from_millis(50)).await);

        let closed = tokio::spawn(async move {
            slow.closing().await;
            drop(slow);
        });
        lifecycle.close_all();
        closed.await.unwrap();
        assert!(lifecycle.wait_idle(Duration::from_secs(1)).await);
        assert_eq!(lifecycle.active(), 0);
    }
}
