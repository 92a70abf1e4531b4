//! Guest networking below the capability servers. [`policy`] decides which socket operations a
//! guest may perform; it is the single gate for both RPC sockets and the guest's own
//! `wasi:sockets` ([`wasi`]). [`socket`] holds the host sockets a process has through RPC,
//! [`count`] counts them (both paths) against `max-sockets`, [`bind`] binds them, and [`audit`]
//! records every decision. [`http`] puts the guest's `wasi:http` requests under the same
//! policy.

pub(crate) mod audit;
pub(crate) mod bind;
pub(crate) mod count;
pub(crate) mod http;
pub(crate) mod lookup;
pub(crate) mod policy;
pub(crate) mod socket;
pub(crate) mod wasi;
