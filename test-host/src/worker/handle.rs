//! [`WorkerHandle`]: the async side of a worker. Each method sends a job to the worker's
//! thread and awaits its answer; the worker stops when the last handle is dropped.

use std::sync::atomic::Ordering;

use super::*;

/// The sending side of a worker; cloning it shares the worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    /// The only strong sender: the worker stops when every handle is gone.
    pub(super) tx: Arc<mpsc::Sender<Job>>,
    /// Where each job sent is counted ([`Shared::round_trips`]).
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerHandle")
    }
}

impl WorkerHandle {
    /// Starts worker `index` and waits until its VM has started and been configured.
    ///
    /// # Errors
    /// Whatever [`Vm::new`] reports, or [`Error::Thread`].
    pub(crate) fn spawn(
        index: usize,
        compiled: Arc<Compiled>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        Self::spawn_thread(
            index,
            format!("test-host-vm-{index}"),
            false,
            compiled,
            shared,
        )
    }

    /// Starts the main thread's worker, as Envoy's main thread runs the plugin: first a base
    /// VM (started and configured, then never called again; Envoy keeps it to clone the
    /// workers' VMs from), then its own VM, whose root ticks and takes queue notifications
    /// but serves no HTTP context. `index` only names it in log lines.
    ///
    /// # Errors
    /// As [`WorkerHandle::spawn`].
    pub(crate) fn spawn_main(
        index: usize,
        compiled: Arc<Compiled>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        Self::spawn_thread(index, "test-host-main".to_owned(), true, compiled, shared)
    }

    fn spawn_thread(
        index: usize,
        name: String,
        base: bool,
        compiled: Arc<Compiled>,
        shared: Arc<Shared>,
    ) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<Job>();
        let tx = Arc::new(tx);
        let weak = Arc::downgrade(&tx);
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), Error>>(1);
        let counted = shared.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if base && let Err(e) = base_vm(&compiled, &shared, shared.configuration()) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let vm = match Vm::new(&compiled, &shared, poster(weak.clone(), 0)) {
                    Ok(vm) => vm,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut worker = Worker {
                    index,
                    compiled,
                    shared,
                    vm: Some(vm),
                    generation: 0,
                    tx: weak,
                };
                run(&mut worker, &rx);
            })
            .map_err(|e| Error::Thread(e.to_string()))?;
        ready_rx.recv().map_err(|_| Error::WorkerGone)??;
        Ok(Self {
            tx,
            shared: counted,
        })
    }

    /// Sends one job to the worker's thread, counted as a round trip.
    fn send(&self, job: Job) -> Result<(), Error> {
        self.shared.round_trips.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).map_err(|_| Error::WorkerGone)
    }

    /// Queues `f` on the worker without waiting.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Worker) + Send + 'static) {
        let _ = self.send(Box::new(f));
    }

    /// Runs `f` on the worker and awaits its result (for async callers).
    ///
    /// # Errors
    /// [`Error::WorkerGone`] when the worker thread has stopped.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |w| {
            let _ = tx.send(f(w));
        }))?;
        rx.await.map_err(|_| Error::WorkerGone)
    }

    /// Runs `f` on the worker and blocks until it is done (for synchronous callers; fine inside
    /// an async test too, the guest never runs on the caller's thread).
    ///
    /// # Errors
    /// [`Error::WorkerGone`] when the worker thread has stopped.
    pub(crate) fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Box::new(move |w| {
            let _ = tx.send(f(w));
        }))?;
        rx.recv().map_err(|_| Error::WorkerGone)
    }
}
