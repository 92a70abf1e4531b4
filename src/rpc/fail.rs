//! How the capability servers fail a call: a typed [`cell_proto::CellError`] sent as a capnp
//! exception whose text starts with its reason word (the bottom of the `rpc` layer).

use std::fmt::Display;

use cell_proto::{CellError, Reason};

/// An RPC error with a stable reason word, e.g. `not-granted: executor`.
pub(crate) fn failed(reason: Reason, detail: impl Display) -> capnp::Error {
    CellError::new(reason, detail).into()
}
