//! The log: the filter's `proxy_log` lines, the host's own events and the guest's WASI
//! stdout/stderr, all into one [`LogSink`] that tests read and the command prints.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use crate::abi::Level;

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// The filter, through `proxy_log`.
    Filter,
    /// The filter's WASI stdout: a record per write, at info, as Envoy logs it.
    Stdout,
    /// The filter's WASI stderr: a record per write, at error, as Envoy logs it.
    Stderr,
    /// The host itself (traps, upstream errors, VM reloads).
    Host,
}

impl LogSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Host => "host",
        }
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// Who wrote it.
    pub source: LogSource,
    /// The text (a WASI write may hold newlines; they are escaped as `\n` when printed).
    pub message: String,
}

impl std::fmt::Display for LogRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            self.level,
            self.source.as_str(),
            self.message.replace('\n', "\\n")
        )
    }
}

/// Where log records go: kept in memory (bounded) for tests, and/or printed to stderr.
#[derive(Clone, Debug)]
pub(crate) struct LogSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    records: Mutex<VecDeque<LogRecord>>,
    capacity: usize,
    echo: bool,
    level: Level,
}

impl LogSink {
    /// A sink keeping the newest `capacity` records at `level` or above, echoing them to stderr
    /// when `echo` is set.
    pub(crate) fn new(level: Level, capacity: usize, echo: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                records: Mutex::new(VecDeque::new()),
                capacity,
                echo,
                level,
            }),
        }
    }

    /// The minimum level recorded (what `proxy_get_log_level` reports).
    pub(crate) fn level(&self) -> Level {
        self.inner.level
    }

    /// Records a line if its level is enabled.
    pub(crate) fn log(&self, level: Level, source: LogSource, message: impl Into<String>) {
        if level < self.inner.level {
            return;
        }
        let record = LogRecord {
            level,
            source,
            message: message.into(),
        };
        if self.inner.echo {
            let _ = writeln!(std::io::stderr().lock(), "{record}");
        }
        if self.inner.capacity > 0 {
            let mut records = self
                .inner
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if records.len() == self.inner.capacity {
                records.pop_front();
            }
            records.push_back(record);
        }
    }

    /// A copy of the records kept so far, oldest first.
    pub(crate) fn records(&self) -> Vec<LogRecord> {
        let records = self
            .inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        records.iter().cloned().collect()
    }
}
