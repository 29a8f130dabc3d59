//! Time: the host clock every VM reads (`proxy_get_current_time_nanoseconds` and WASI
//! `clock_time_get` agree).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall clock a host gives its filters.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The machine's clock.
    #[default]
    System,
    /// Always this instant (tokens signed at a pinned time are reproducible).
    Pinned(SystemTime),
    /// A clock the test moves by hand.
    Manual(ManualClock),
}

/// A clock shared between a test and the host; [`ManualClock::advance`] moves it.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock reading `start`.
    #[must_use]
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// The current reading.
    #[must_use]
    pub fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the reading.
    pub fn set(&self, time: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = time;
    }

    /// Moves the reading forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t += by;
    }
}

/// A [`Clock`] plus the monotonic origin of the host.
#[derive(Clone, Debug)]
pub(crate) struct HostClock {
    clock: Clock,
    origin: Instant,
}

impl HostClock {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            clock,
            origin: Instant::now(),
        }
    }

    /// Wall-clock time.
    pub(crate) fn now(&self) -> SystemTime {
        match &self.clock {
            Clock::System => SystemTime::now(),
            Clock::Pinned(t) => *t,
            Clock::Manual(m) => m.now(),
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch (0 before it).
    pub(crate) fn unix_nanos(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Monotonic nanoseconds: real elapsed time for [`Clock::System`], the wall reading for
    /// pinned and manual clocks (so tests stay deterministic).
    pub(crate) fn monotonic_nanos(&self) -> u64 {
        match self.clock {
            Clock::System => u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX),
            _ => self.unix_nanos(),
        }
    }
}
