//! Whether a client connection has a request in flight, and since when it has had none: the
//! guard's idle timeout, and its wait before writing a refusal, ask this.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use tokio::time::Instant;

/// Requests in flight on one connection, shared by the guard and the responses.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    state: Mutex<Idle>,
}

#[derive(Debug)]
struct Idle {
    /// When the last response finished.
    since: Instant,
    /// The guard, waiting for the connection to become idle.
    waker: Option<Waker>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(Idle {
                since: Instant::now(),
                waker: None,
            }),
        })
    }

    /// A request starts; it ends when the returned guard drops (its response is done).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// `Some(when the last response ended)` while no request is in flight; otherwise `None`,
    /// and `waker` is woken when the last one ends.
    pub(super) fn idle_since(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return Some(state.since);
        }
        state.waker = Some(waker.clone());
        None
    }
}

/// One request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            state.since = Instant::now();
            if let Some(w) = state.waker.take() {
                w.wake();
            }
        }
    }
}
