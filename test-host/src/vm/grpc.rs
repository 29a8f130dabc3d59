//! Delivering what a gRPC call or stream received: the callback on the root context that
//! owns it (Envoy's `onGrpc*` of the root context; the SDK finds the HTTP context by
//! token), with the metadata or message readable only while it runs, and the status kept
//! for `proxy_get_status` (its message cleared after the close callback, its code kept).

use super::{Vm, len32};
use crate::error::Error;
use crate::state::grpc::GrpcEvent;

impl Vm {
    /// Delivers `event` of call `token`; one for a call cancelled since is dropped.
    ///
    /// # Errors
    /// A trap in the callback.
    pub(crate) fn grpc_event(&mut self, token: u32, event: GrpcEvent) -> Result<(), Error> {
        let data = self.store.data_mut();
        let Some(root) = data.grpc.root_of(token) else {
            return Ok(());
        };
        if !data.roots.contains(&root) {
            data.grpc.cancel(token);
            return Ok(());
        }
        let r = match event {
            GrpcEvent::InitialMetadata(map) => {
                let n = len32(map.len());
                data.grpc.initial_metadata = Some(map);
                let f = self.cb.grpc_initial_metadata.clone();
                let r = self.call(
                    root,
                    "proxy_on_grpc_receive_initial_metadata",
                    &f,
                    (root, token, n),
                );
                self.store.data_mut().grpc.initial_metadata = None;
                r
            }
            GrpcEvent::Message(message) => {
                let n = len32(message.len());
                data.grpc.receive_buffer = Some(message);
                let f = self.cb.grpc_receive.clone();
                let r = self.call(root, "proxy_on_grpc_receive", &f, (root, token, n));
                let grpc = &mut self.store.data_mut().grpc;
                grpc.receive_buffer = None;
                grpc.finish(token);
                r
            }
            GrpcEvent::TrailingMetadata(map) => {
                let n = len32(map.len());
                data.grpc.trailing_metadata = Some(map);
                let f = self.cb.grpc_trailing_metadata.clone();
                let r = self.call(
                    root,
                    "proxy_on_grpc_receive_trailing_metadata",
                    &f,
                    (root, token, n),
                );
                self.store.data_mut().grpc.trailing_metadata = None;
                r
            }
            GrpcEvent::Close { status, message } => {
                data.grpc.set_status(root, status, message);
                let f = self.cb.grpc_close.clone();
                let r = self.call(root, "proxy_on_grpc_close", &f, (root, token, status));
                let grpc = &mut self.store.data_mut().grpc;
                grpc.clear_message(root);
                grpc.closed_remotely(token);
                r
            }
        };
        let data = self.store.data_mut();
        data.effective_context = data.root;
        r.map(drop)
    }
}
