//! `FramingCheck`: watches the bytes a guest sends on its RPC channel and refuses a message
//! whose framing is hostile, before any of it is parsed or buffered.
//!
//! Cap'n Proto's stream framing starts each message with a segment table: the segment count
//! and every segment's size in words. capnp-futures itself rejects more than 512 segments and
//! checks the total against the traversal limit before allocating; this check does the same
//! on the raw bytes, for one more reason: it *records* the violation on the connection at the
//! moment the bytes arrive. Without that, a guest could receive capnp-rpc's `Abort` and exit
//! on its own before the RPC system finished shutting down, and be reported `exited` instead
//! of `protocol violation`. Cost: a few comparisons per read; at most one segment table
//! (≤ 2 KiB) is buffered.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::rpc::flow::Flow;

/// Most segments a message may have (as capnp-futures).
const MAX_SEGMENTS: u64 = 512;

/// The first protocol violation seen on a connection, shared with its process task.
pub(crate) type Violation = Rc<RefCell<Option<String>>>;

/// Tracks message boundaries in a byte stream and checks each segment table.
#[derive(Debug)]
pub(crate) struct FramingCheck {
    limit_bytes: u64,
    /// Bytes of the current segment table read so far.
    table: Vec<u8>,
    /// Length of the whole current table in bytes, once the first word is known.
    table_len: usize,
    /// Bytes of the current message body still to come.
    body_left: u64,
    /// Told each message's size, so the connection can charge it while capnp-rpc holds it.
    flow: Option<Rc<Flow>>,
}

impl FramingCheck {
    pub(crate) fn new(limit_bytes: u64) -> Self {
        FramingCheck {
            limit_bytes,
            table: Vec::new(),
            table_len: 0,
            body_left: 0,
            flow: None,
        }
    }

    /// This check, telling `flow` the size of every message it passes.
    pub(crate) fn with_flow(mut self, flow: Rc<Flow>) -> Self {
        self.flow = Some(flow);
        self
    }

    /// Feeds the next bytes of the stream.
    ///
    /// # Errors
    /// A description of the violation: too many segments, or a message over the limit.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let want = if self.table_len == 0 {
                8
            } else {
                self.table_len
            };
            let n = (want - self.table.len()).min(data.len());
            self.table.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.table.len() < want {
                return Ok(());
            }
            if self.table_len == 0 {
                let count = u64::from(word(&self.table, 0)) + 1;
                if count >= MAX_SEGMENTS {
                    return Err(text_hint(&self.table)
                        .unwrap_or_else(|| format!("message framing claims {count} segments")));
                }
                // The count word, one size per segment, padded to a whole word.
                self.table_len = ((4 * (count as usize + 1)) + 7) & !7;
                if self.table_len > self.table.len() {
                    continue;
                }
            }
            let count = u64::from(word(&self.table, 0)) + 1;
            let words: u64 = (0..count as usize)
                .map(|i| u64::from(word(&self.table, i + 1)))
                .sum();
            let bytes = words * 8;
            if bytes > self.limit_bytes {
                return Err(text_hint(&self.table).unwrap_or_else(|| {
                    format!(
                        "message of {bytes} bytes exceeds max-message-size {}",
                        self.limit_bytes
                    )
                }));
            }
            self.body_left = bytes;
            if let Some(flow) = &self.flow {
                flow.framed(usize::try_from(bytes).unwrap_or(usize::MAX));
            }
            self.table.clear();
            self.table_len = 0;
        }
        Ok(())
    }
}

/// When a bad frame starts with printable text, the guest almost certainly printed to stdout
/// (`println!`) instead of logging to stderr: say so, instead of quoting a frame size.
fn text_hint(frame: &[u8]) -> Option<String> {
    let head = &frame[..frame.len().min(8)];
    let printable = |b: &u8| b.is_ascii_graphic() || matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    if head.len() < 8 || !head.iter().all(printable) {
        return None;
    }
    let text = String::from_utf8_lossy(head);
    Some(format!(
        "wrote text ({text:?}…) to stdout, which is its RPC channel; a cell guest logs with \
         stderr (an ordinary WASI program runs with --plain)"
    ))
}

fn word(table: &[u8], i: usize) -> u32 {
    let b = &table[i * 4..i * 4 + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A reader that runs every byte through a [`FramingCheck`] and fails, recording the
/// violation, on the first bad frame.
pub(crate) struct CheckedReader<R> {
    inner: R,
    check: FramingCheck,
    violation: Violation,
}

impl<R> CheckedReader<R> {
    pub(crate) fn new(inner: R, check: FramingCheck, violation: Violation) -> Self {
        CheckedReader {
            inner,
            check,
            violation,
        }
    }
}

impl<R: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for CheckedReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(v) = this.violation.borrow().as_ref() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v.clone())));
        }
        let n = match Pin::new(&mut this.inner).poll_read(cx, out) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        if let Err(v) = this.check.feed(&out[..n]) {
            this.violation.borrow_mut().get_or_insert(v.clone());
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v)));
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_text_is_named_as_such() {
        let mut check = FramingCheck::new(1 << 20);
        let e = check.feed(b"hello, world\n").unwrap_err();
        assert!(e.starts_with("wrote text (\"hello, w\"…) to stdout"), "{e}");
        // Binary garbage keeps the framing reason.
        let mut check = FramingCheck::new(1 << 20);
        let e = check.feed(b"\xff\xff\xff\x7fTHIS IS").unwrap_err();
        assert!(e.contains("segments"), "{e}");
    }

    fn frame(sizes: &[u32]) -> Vec<u8> {
        let mut f = (sizes.len() as u32 - 1).to_le_bytes().to_vec();
        for s in sizes {
            f.extend_from_slice(&s.to_le_bytes());
        }
        if !f.len().is_multiple_of(8) {
            f.extend_from_slice(&[0; 4]);
        }
        for s in sizes {
            f.extend(std::iter::repeat_n(0u8, *s as usize * 8));
        }
        f
    }

    #[test]
    fn good_messages_pass_in_any_chunking() {
        let mut stream = frame(&[3]);
        stream.extend(frame(&[1, 2]));
        stream.extend(frame(&[0, 1, 1, 4]));
        for chunk in [1, 3, 7, 64] {
            let mut c = FramingCheck::new(64);
            for part in stream.chunks(chunk) {
                c.feed(part).unwrap();
            }
            assert_eq!((c.body_left, c.table.len()), (0, 0), "at a boundary");
        }
    }

    #[test]
    fn oversized_and_overcounted_frames_are_refused() {
        let mut c = FramingCheck::new(64);
        assert!(c.feed(&frame(&[9])[..8]).unwrap_err().contains("72 bytes"));
        let mut c = FramingCheck::new(1 << 30);
        let claim = [0u8, 0, 0, 0, 0, 0, 0, 0x20]; // one segment of 2^29 words
        assert!(c.feed(&claim).unwrap_err().contains("exceeds"));
        let mut c = FramingCheck::new(1 << 30);
        assert!(c
            .feed(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0])
            .unwrap_err()
            .contains("segments"));
    }
}
