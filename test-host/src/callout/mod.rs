//! The I/O of calls a filter makes to clusters, on tokio (never on a VM's worker thread):
//! each finished step is posted back to the VM's worker as a job
//! ([`crate::state::callout::Poster`]).

pub(crate) mod grpc;
pub(crate) mod http;
