//! Guest networking. [`policy`] decides which socket operations a guest may perform; it is the
//! single gate for both RPC sockets and the guest's own `wasi:sockets`.

pub mod audit;
pub mod bind;
pub mod count;
pub mod policy;
pub mod wasi;
