//! Host-wide state every VM of a host sees: shared data with compare-and-swap, metrics and
//! shared queues, with Envoy's semantics. One `Mutex` each, so counts are exact across workers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::abi::{MetricType, Status};
use crate::state::callout::{Completion, Poster};

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

/// Metrics by name (`proxy_define_metric` and friends). The same (kind, name) defined again,
/// by any VM, is the same metric under a new id, as in Envoy; an id carries its kind in its
/// low two bits (Envoy's encoding), so an id of no kind is `BadArgument` and an unknown id
/// of a known kind `NotFound`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Debug, Default)]
struct MetricsInner {
    by_name: HashMap<(u8, String), usize>,
    metrics: Vec<(String, MetricValue)>,
    ids: HashMap<u32, usize>,
    defined: u32,
}

fn kind_tag(kind: MetricType) -> u8 {
    match kind {
        MetricType::Counter => 0,
        MetricType::Gauge => 1,
        MetricType::Histogram => 2,
    }
}

impl MetricsInner {
    /// The metric of `id`: `BadArgument` for an id of no kind, `NotFound` for one never
    /// defined.
    fn get_mut(&mut self, id: u32) -> Result<&mut MetricValue, Status> {
        if id & 3 == 3 {
            return Err(Status::BadArgument);
        }
        let index = *self.ids.get(&id).ok_or(Status::NotFound)?;
        self.metrics
            .get_mut(index)
            .map(|(_, v)| v)
            .ok_or(Status::NotFound)
    }
}

impl Metrics {
    /// A new id for (kind, name), defining the metric at zero on first use.
    pub(crate) fn define(&self, kind: MetricType, name: &str) -> u32 {
        let mut inner = lock(&self.inner);
        let tag = kind_tag(kind);
        let index = match inner.by_name.get(&(tag, name.to_owned())) {
            Some(&index) => index,
            None => {
                let value = match kind {
                    MetricType::Counter => MetricValue::Counter(0),
                    MetricType::Gauge => MetricValue::Gauge(0),
                    MetricType::Histogram => MetricValue::Histogram(Vec::new()),
                };
                inner.metrics.push((name.to_owned(), value));
                let index = inner.metrics.len() - 1;
                inner.by_name.insert((tag, name.to_owned()), index);
                index
            }
        };
        inner.defined = inner.defined.wrapping_add(1);
        let id = (inner.defined << 2) | u32::from(tag);
        inner.ids.insert(id, index);
        id
    }

    /// Envoy's increment: counters take positive offsets only; gauges add or subtract;
    /// histograms cannot be incremented.
    pub(crate) fn increment(&self, id: u32, offset: i64) -> Status {
        let mut inner = lock(&self.inner);
        let value = match inner.get_mut(id) {
            Ok(v) => v,
            Err(status) => return status,
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
        let value = match inner.get_mut(id) {
            Ok(v) => v,
            Err(status) => return status,
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
        let mut inner = lock(&self.inner);
        match inner.get_mut(id)? {
            MetricValue::Counter(v) | MetricValue::Gauge(v) => Ok(*v),
            MetricValue::Histogram(_) => Err(Status::BadArgument),
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

/// Shared queues (`proxy_*_shared_queue`), with Envoy's semantics: a queue is named within a
/// VM id; registering a name again (another VM, another root) keeps the queue and its values
/// and makes the new registrant the one notified; every successful enqueue, from any VM,
/// posts one `proxy_on_queue_ready` to the registrant's worker.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    inner: Mutex<QueuesInner>,
}

#[derive(Debug, Default)]
struct QueuesInner {
    ids: HashMap<(String, String), u32>,
    queues: Vec<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    values: VecDeque<Vec<u8>>,
    /// Who `proxy_on_queue_ready` goes to: the worker of the registering VM, and its root.
    registrant: Option<(Poster, u32)>,
}

impl Queues {
    /// The id of queue `name` of `vm_id`, created empty on first use; `registrant` is notified
    /// of its enqueues from now on.
    pub(crate) fn register(
        &self,
        vm_id: &str,
        name: &str,
        registrant: Option<(Poster, u32)>,
    ) -> u32 {
        let mut inner = lock(&self.inner);
        let id = match inner.ids.get(&(vm_id.to_owned(), name.to_owned())) {
            Some(id) => *id,
            None => {
                inner.queues.push(Queue::default());
                let id = inner.queues.len() as u32;
                inner.ids.insert((vm_id.to_owned(), name.to_owned()), id);
                id
            }
        };
        if let Some(queue) = inner.queues.get_mut((id as usize).wrapping_sub(1)) {
            queue.registrant = registrant;
        }
        id
    }

    pub(crate) fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.inner)
            .ids
            .get(&(vm_id.to_owned(), name.to_owned()))
            .copied()
    }

    /// Appends `value` and notifies the registrant (after the lock is released).
    pub(crate) fn enqueue(&self, id: u32, value: Vec<u8>) -> Status {
        let registrant = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner.queues.get_mut((id as usize).wrapping_sub(1)) else {
                return Status::NotFound;
            };
            q.values.push_back(value);
            q.registrant.clone()
        };
        if let Some((poster, root)) = registrant {
            poster.post(Completion::QueueReady { root, queue: id });
        }
        Status::Ok
    }

    /// The oldest value (`Empty` when there is none).
    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        match lock(&self.inner)
            .queues
            .get_mut((id as usize).wrapping_sub(1))
        {
            Some(q) => q.values.pop_front().ok_or(Status::Empty),
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
    fn queues_notify_the_last_registrant_once_per_enqueue() {
        use std::sync::Arc;
        let posted = Arc::new(Mutex::new(Vec::new()));
        let recorder = |tag: u32| {
            let posted = posted.clone();
            Poster::new(move |c| {
                if let Completion::QueueReady { root, queue } = c {
                    lock(&posted).push((tag, root, queue));
                }
            })
        };
        let q = Queues::default();
        let id = q.register("vm", "q", Some((recorder(1), 1)));
        assert_eq!(q.register("vm", "q", Some((recorder(2), 5))), id);
        assert_ne!(q.register("other", "q", None), id);
        assert_eq!(q.resolve("vm", "q"), Some(id));
        assert_eq!(q.resolve("vm", "nope"), None);
        assert_eq!(q.enqueue(id, b"a".to_vec()), Status::Ok);
        assert_eq!(q.enqueue(id, b"b".to_vec()), Status::Ok);
        assert_eq!(q.enqueue(99, b"c".to_vec()), Status::NotFound);
        assert_eq!(*lock(&posted), [(2, 5, id), (2, 5, id)]);
        assert_eq!(q.dequeue(id), Ok(b"a".to_vec()));
        assert_eq!(q.dequeue(id), Ok(b"b".to_vec()));
        assert_eq!(q.dequeue(id), Err(Status::Empty));
        assert_eq!(q.dequeue(99), Err(Status::NotFound));
    }

    #[test]
    fn metrics_follow_envoy() {
        let m = Metrics::default();
        let c = m.define(MetricType::Counter, "c");
        let again = m.define(MetricType::Counter, "c");
        assert_ne!(again, c);
        assert_eq!(m.increment(again, 1), Status::Ok);
        assert_eq!(m.increment(c, 1), Status::Ok);
        assert_eq!(m.increment(c, -1), Status::BadArgument);
        assert_eq!(m.get(c), Ok(2));
        let g = m.define(MetricType::Gauge, "g");
        assert_eq!(m.increment(g, -5), Status::Ok);
        assert_eq!(m.record(g, 7), Status::Ok);
        assert_eq!(m.get(g), Ok(7));
        let h = m.define(MetricType::Histogram, "h");
        assert_eq!(m.record(h, 3), Status::Ok);
        assert_eq!(m.get(h), Err(Status::BadArgument));
        assert_eq!(m.get(9999), Err(Status::BadArgument));
        assert_eq!(m.get(1 << 10), Err(Status::NotFound));
        assert_eq!(m.increment(0, 1), Status::NotFound);
    }
}
