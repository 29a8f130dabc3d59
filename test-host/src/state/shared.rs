//! Host-wide state every VM of a host sees: shared data with compare-and-swap, metrics and
//! shared queues, with Envoy's semantics. One `Mutex` each, so counts are exact across workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::abi::{MetricType, Status};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Key/value store with CAS tokens (`proxy_{get,set}_shared_data`).
#[derive(Debug, Default)]
pub(crate) struct SharedData {
    inner: Mutex<DataInner>,
}

#[derive(Debug, Default)]
struct DataInner {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    last_cas: u32,
}

impl SharedData {
    /// Value and CAS token of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        lock(&self.inner).entries.get(key).cloned()
    }

    /// Envoy's set: CAS 0 writes unconditionally; a non-zero CAS must match the stored token of
    /// an existing key. Every write gets a fresh non-zero token.
    pub(crate) fn set(&self, key: &[u8], value: &[u8], cas: u32) -> Status {
        let mut inner = lock(&self.inner);
        if let Some((_, current)) = inner.entries.get(key)
            && cas != 0
            && cas != *current
        {
            return Status::CasMismatch;
        }
        inner.last_cas = match inner.last_cas.wrapping_add(1) {
            0 => 1,
            n => n,
        };
        let token = inner.last_cas;
        inner.entries.insert(key.to_vec(), (value.to_vec(), token));
        Status::Ok
    }
}

/// A metric's current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MetricValue {
    Counter(u64),
    Gauge(u64),
    Histogram(Vec<u64>),
}

/// Metrics by name (`proxy_define_metric` and friends). The same (kind, name) defined by two VMs
/// is one metric.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    ids: HashMap<(u8, String), u32>,
    metrics: Vec<(String, MetricValue)>,
}

fn kind_tag(kind: MetricType) -> u8 {
    match kind {
        MetricType::Counter => 0,
        MetricType::Gauge => 1,
        MetricType::Histogram => 2,
    }
}

impl Metrics {
    /// The id of (kind, name), defining it at zero on first use. Ids start at 1.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(id) = inner.ids.get(&(kind_tag(kind), name.to_owned())) {
            return *id;
        }
        let value = match kind {
            MetricType::Counter => MetricValue::Counter(0),
            MetricType::Gauge => MetricValue::Gauge(0),
            MetricType::Histogram => MetricValue::Histogram(Vec::new()),
        };
        inner.metrics.push((name.to_owned(), value));
        let id = inner.metrics.len() as u32;
        inner.ids.insert((kind_tag(kind), name.to_owned()), id);
        id
    }

    /// Envoy's increment: counters take positive offsets only; gauges add or subtract;
    /// histograms cannot be incremented.
    pub(crate) fn increment(&self, id: u32, offset: i64) -> Status {
        let mut inner = lock(&self.inner);
        let Some((_, value)) = inner.metrics.get_mut((id as usize).wrapping_sub(1)) else {
            return Status::NotFound;
        };
        match value {
            MetricValue::Counter(v) if offset > 0 => *v = v.saturating_add(offset.unsigned_abs()),
            MetricValue::Gauge(v) if offset >= 0 => *v = v.saturating_add(offset.unsigned_abs()),
            MetricValue::Gauge(v) => *v = v.saturating_sub(offset.unsigned_abs()),
            MetricValue::Counter(_) | MetricValue::Histogram(_) => return Status::BadArgument,
        }
        Status::Ok
    }

    /// Envoy's record: adds to a counter, sets a gauge, records a histogram sample.
    pub(crate) fn record(&self, id: u32, sample: u64) -> Status {
        let mut inner = lock(&self.inner);
        let Some((_, value)) = inner.metrics.get_mut((id as usize).wrapping_sub(1)) else {
            return Status::NotFound;
        };
        match value {
            MetricValue::Counter(v) => *v = v.saturating_add(sample),
            MetricValue::Gauge(v) => *v = sample,
            MetricValue::Histogram(samples) => samples.push(sample),
        }
        Status::Ok
    }

    /// Envoy's get: counters and gauges are readable, histograms are not.
    pub(crate) fn get(&self, id: u32) -> Result<u64, Status> {
        let inner = lock(&self.inner);
        match inner.metrics.get((id as usize).wrapping_sub(1)) {
            None => Err(Status::NotFound),
            Some((_, MetricValue::Counter(v) | MetricValue::Gauge(v))) => Ok(*v),
            Some((_, MetricValue::Histogram(_))) => Err(Status::BadArgument),
        }
    }

    /// The first metric called `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<MetricValue> {
        let inner = lock(&self.inner);
        inner
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// Shared queues (`proxy_*_shared_queue`). Consumers poll with dequeue; `proxy_on_queue_ready`
/// notifications are not sent.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    inner: Mutex<QueuesInner>,
}

#[derive(Debug, Default)]
struct QueuesInner {
    ids: HashMap<(String, String), u32>,
    queues: Vec<VecDeque<Vec<u8>>>,
}

impl Queues {
    pub(crate) fn register(&self, vm_id: &str, name: &str) -> u32 {
        let mut inner = lock(&self.inner);
        if let Some(id) = inner.ids.get(&(vm_id.to_owned(), name.to_owned())) {
            return *id;
        }
        inner.queues.push(VecDeque::new());
        let id = inner.queues.len() as u32;
        inner.ids.insert((vm_id.to_owned(), name.to_owned()), id);
        id
    }

    pub(crate) fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.inner)
            .ids
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    pub(crate) fn enqueue(&self, id: u32, value: Vec<u8>) -> Status {
        match lock(&self.inner)
            .queues
            .get_mut((id as usize).wrapping_sub(1))
        {
            Some(q) => {
                q.push_back(value);
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        match lock(&self.inner)
            .queues
            .get_mut((id as usize).wrapping_sub(1))
        {
            Some(q) => q.pop_front().ok_or(Status::Empty),
            None => Err(Status::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoy() {
        let data = SharedData::default();
        assert_eq!(data.get(b"k"), None);
        assert_eq!(data.set(b"k", b"1", 0), Status::Ok);
        let (_, cas) = data.get(b"k").unwrap_or_default();
        assert_ne!(cas, 0);
        assert_eq!(
            data.set(b"k", b"2", cas.wrapping_add(1)),
            Status::CasMismatch
        );
        assert_eq!(data.set(b"k", b"2", cas), Status::Ok);
        assert_eq!(data.set(b"k", b"3", cas), Status::CasMismatch);
        assert_eq!(data.get(b"k").map(|(v, _)| v), Some(b"2".to_vec()));
    }

    #[test]
    fn metrics_follow_envoy() {
        let m = Metrics::default();
        let c = m.define(MetricType::Counter, "c");
        assert_eq!(m.define(MetricType::Counter, "c"), c);
        assert_eq!(m.increment(c, 2), Status::Ok);
        assert_eq!(m.increment(c, -1), Status::BadArgument);
        assert_eq!(m.get(c), Ok(2));
        let g = m.define(MetricType::Gauge, "g");
        assert_eq!(m.increment(g, -5), Status::Ok);
        assert_eq!(m.record(g, 7), Status::Ok);
        assert_eq!(m.get(g), Ok(7));
        let h = m.define(MetricType::Histogram, "h");
        assert_eq!(m.record(h, 3), Status::Ok);
        assert_eq!(m.get(h), Err(Status::BadArgument));
        assert_eq!(m.get(99), Err(Status::NotFound));
        assert_eq!(m.increment(0, 1), Status::NotFound);
    }
}
