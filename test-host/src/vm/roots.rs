//! Root contexts beyond the start: ticks per root, queue-ready notifications, and the end of a
//! root (`proxy_on_done`, `proxy_on_delete`) when a new configuration replaced it and its last
//! request finished, or when the host shuts down, as Envoy 1.40 ends them.

use super::Vm;
use crate::error::Error;

impl Vm {
    /// `proxy_on_tick` on root context `root`, if it is alive.
    ///
    /// # Errors
    /// A trap in the callback.
    pub(crate) fn tick_root(&mut self, root: u32) -> Result<(), Error> {
        if !self.store.data().roots.contains(&root) {
            return Ok(());
        }
        let f = self.cb.tick.clone();
        let r = self.call(root, "proxy_on_tick", &f, root).map(drop);
        let data = self.store.data_mut();
        data.effective_context = data.root;
        r
    }

    /// `proxy_on_queue_ready(root, queue)`, if `root` is still alive (Envoy drops the
    /// notification of a root that is gone).
    ///
    /// # Errors
    /// A trap in the callback.
    pub(crate) fn queue_ready(&mut self, root: u32, queue: u32) -> Result<(), Error> {
        if !self.store.data().roots.contains(&root) {
            return Ok(());
        }
        let f = self.cb.queue_ready.clone();
        let r = self
            .call(root, "proxy_on_queue_ready", &f, (root, queue))
            .map(drop);
        let data = self.store.data_mut();
        data.effective_context = data.root;
        r
    }

    /// Ends root `root` if a newer configuration replaced it and none of its HTTP contexts is
    /// left.
    pub(super) fn retire_if_idle(&mut self, root: u32) -> Result<(), Error> {
        let data = self.store.data();
        if root == data.root
            || !data.roots.contains(&root)
            || data.streams.values().any(|s| s.root == root)
        {
            return Ok(());
        }
        self.retire(root)
    }

    /// `proxy_on_done` then `proxy_on_delete` on root `root`; it ticks no more and its queues
    /// notify nobody.
    pub(super) fn retire(&mut self, root: u32) -> Result<(), Error> {
        let (done, delete) = (self.cb.done.clone(), self.cb.delete.clone());
        let r = self
            .call(root, "proxy_on_done", &done, root)
            .and_then(|_| self.call(root, "proxy_on_delete", &delete, root));
        let data = self.store.data_mut();
        data.roots.retain(|&r| r != root);
        data.tick_periods.remove(&root);
        data.effective_context = data.root;
        r.map(drop)
    }

    /// The host is stopping: every root context still alive gets `proxy_on_done` and
    /// `proxy_on_delete` (Envoy does this on its workers, then on the main thread).
    ///
    /// # Errors
    /// The first trap.
    pub(crate) fn shutdown(&mut self) -> Result<(), Error> {
        let roots = self.store.data().roots.clone();
        let mut result = Ok(());
        for root in roots {
            let r = self.retire(root);
            result = result.and(r);
        }
        result
    }
}
