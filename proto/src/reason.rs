//! Typed errors on the wire: every reason word a host error starts with, and the error that
//! carries one.
//!
//! On the wire an error is a Cap'n Proto exception whose text is `REASON: DETAIL` (the schema
//! header lists the words). [`CellError`] is that pair, typed: the host builds one and turns it
//! into a `capnp::Error`; a guest or client turns a `capnp::Error` back into one and matches on
//! [`CellError::reason`] instead of searching the text.

use std::fmt;
use std::str::FromStr;

/// Why a call failed. `as_str` is the word on the wire; it never changes for a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The process does not hold the capability (`not-granted: executor`).
    NotGranted,
    /// The network policy refused the operation.
    Denied,
    /// A limit would be exceeded.
    Limit,
    /// The process the capability belongs to has ended.
    Dead,
    /// The bytes are not a loadable component.
    BadWasm,
    /// The component imports something cell does not provide.
    MissingImport,
    /// Instantiating the component failed.
    Instantiate,
    /// A grant is not a capability the host issued to this process, or cannot be applied.
    BadGrant,
    /// A policy's rules do not parse or cannot be applied.
    BadPolicy,
    /// An address or host name is malformed.
    BadAddress,
    /// A host name did not resolve (or only to addresses the policy denies).
    Unresolvable,
    /// A connection was attempted and failed.
    ConnectFailed,
    /// Binding or listening on a TCP address failed.
    ListenFailed,
    /// Binding a UDP socket failed.
    BindFailed,
    /// The operation is not supported by this host or on this object.
    Unsupported,
    /// `Process.stderr` of a child not spawned with `stderr = capture`.
    NotCaptured,
    /// `Process.stdin`/`stdout` of an RPC child.
    NotPlain,
    /// The stream or socket was closed.
    Closed,
    /// An I/O error on a host object.
    Io,
    /// A request message could not be read (malformed, not UTF-8, an unknown enumerant).
    BadRequest,
    /// Client side only, never sent by a host: the connection to the host is gone.
    Disconnected,
    /// Client side only: an error without a known reason word (a bug, or a newer host).
    Unknown,
}

impl Reason {
    /// Every reason a host sends, in schema order.
    pub const WIRE: [Reason; 20] = [
        Reason::NotGranted,
        Reason::Denied,
        Reason::Limit,
        Reason::Dead,
        Reason::BadWasm,
        Reason::MissingImport,
        Reason::Instantiate,
        Reason::BadGrant,
        Reason::BadPolicy,
        Reason::BadAddress,
        Reason::Unresolvable,
        Reason::ConnectFailed,
        Reason::ListenFailed,
        Reason::BindFailed,
        Reason::Unsupported,
        Reason::NotCaptured,
        Reason::NotPlain,
        Reason::Closed,
        Reason::Io,
        Reason::BadRequest,
    ];

    /// The word on the wire, e.g. `not-granted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotGranted => "not-granted",
            Reason::Denied => "denied",
            Reason::Limit => "limit",
            Reason::Dead => "dead",
            Reason::BadWasm => "bad-wasm",
            Reason::MissingImport => "missing-import",
            Reason::Instantiate => "instantiate",
            Reason::BadGrant => "bad-grant",
            Reason::BadPolicy => "bad-policy",
            Reason::BadAddress => "bad-address",
            Reason::Unresolvable => "unresolvable",
            Reason::ConnectFailed => "connect-failed",
            Reason::ListenFailed => "listen-failed",
            Reason::BindFailed => "bind-failed",
            Reason::Unsupported => "unsupported",
            Reason::NotCaptured => "not-captured",
            Reason::NotPlain => "not-plain",
            Reason::Closed => "closed",
            Reason::Io => "io",
            Reason::BadRequest => "bad-request",
            Reason::Disconnected => "disconnected",
            Reason::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of the words a host sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason word {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::WIRE
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

/// An error with a stable reason and a human detail: `limit: max-procs 64 reached`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    /// What kind of failure it is; match on this.
    pub reason: Reason,
    /// For people: what exactly failed. Not a stable format.
    pub detail: String,
}

/// The prefix capnp-rpc puts before an exception's text when it arrives from the other side.
const REMOTE_PREFIX: &str = "remote exception: ";

impl CellError {
    /// An error with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl fmt::Display) -> Self {
        CellError {
            reason,
            detail: detail.to_string(),
        }
    }

    /// Reads an error's text as `REASON: DETAIL` (with or without capnp-rpc's
    /// `remote exception: ` prefix); `None` if it does not start with a known reason word.
    pub fn parse(text: &str) -> Option<CellError> {
        // An error proxied over several connections (a remote node's, through its client
        // host) carries the prefix once per hop.
        let mut text = text;
        while let Some(rest) = text.strip_prefix(REMOTE_PREFIX) {
            text = rest;
        }
        let (word, detail) = text.split_once(": ")?;
        let reason = word.parse().ok()?;
        Some(CellError::new(reason, detail))
    }

    /// A request that could not be read: `bad-request` with capnp's description.
    pub fn bad_request(e: capnp::Error) -> Self {
        CellError::new(Reason::BadRequest, e.extra)
    }

    /// The reason of a `capnp::Error`, if it carries one.
    pub fn reason_of(e: &capnp::Error) -> Reason {
        CellError::from(e.clone()).reason
    }
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for CellError {}

/// How the host sends an error: a `failed` exception with the text `REASON: DETAIL`.
impl From<CellError> for capnp::Error {
    fn from(e: CellError) -> Self {
        capnp::Error::failed(e.to_string())
    }
}

/// How a guest or client reads one: a disconnection is [`Reason::Disconnected`]; text without a
/// known reason word is [`Reason::Unknown`] with the whole text as the detail.
impl From<capnp::Error> for CellError {
    fn from(e: capnp::Error) -> Self {
        if let Some(parsed) = CellError::parse(&e.extra) {
            return parsed;
        }
        let reason = match e.kind {
            capnp::ErrorKind::Disconnected => Reason::Disconnected,
            _ => Reason::Unknown,
        };
        let detail = e.extra.strip_prefix(REMOTE_PREFIX).unwrap_or(&e.extra);
        CellError::new(reason, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_word_round_trips() {
        for reason in Reason::WIRE {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
            let e: capnp::Error = CellError::new(reason, "x y: z").into();
            let back = CellError::from(e);
            assert_eq!((back.reason, back.detail.as_str()), (reason, "x y: z"));
        }
    }

    #[test]
    fn remote_prefix_and_unknown_words() {
        let remote = capnp::Error::failed("remote exception: limit: max-procs 4 reached".into());
        assert_eq!(CellError::reason_of(&remote), Reason::Limit);
        let odd = capnp::Error::failed("remote exception: something odd".into());
        let e = CellError::from(odd);
        assert_eq!(
            (e.reason, e.detail.as_str()),
            (Reason::Unknown, "something odd")
        );
        assert!("client-only".parse::<Reason>().is_err());
        assert!(
            "disconnected".parse::<Reason>().is_err(),
            "never on the wire"
        );
        let gone = capnp::Error::disconnected("connection closed".into());
        assert_eq!(CellError::reason_of(&gone), Reason::Disconnected);
    }
}
