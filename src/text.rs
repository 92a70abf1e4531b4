//! Guest-supplied text on its way into what the host prints or stores: log lines, forwarded
//! stderr, the audit log, the run report and error messages.
//!
//! A guest chooses process names, host names, trap frames (its own name section) and the
//! bytes of its stderr. Unfiltered, it could forge a `[pid 0] cell: …` line with a carriage
//! return, retitle or clear the operator's terminal with ANSI/OSC escapes, reorder a line with
//! bidi overrides, or make the host keep megabytes per audit line. So every such string is
//! bounded ([`GUEST_TEXT_MAX`]) and every control character in it is written as an escape.

use std::fmt::Write as _;

/// The most bytes of one guest-supplied string the host keeps or prints (names, hosts, frames).
/// Longer strings are cut at a character boundary and say how long they were.
pub(crate) const GUEST_TEXT_MAX: usize = 256;

/// Whether `c` must not reach a terminal or a log as itself: C0 and C1 controls and DEL (tab
/// excepted), and the bidirectional embedding/override/isolate characters.
fn must_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `s` to `out` with every character [`must_escape`] says so written as `\u{XX}`.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if must_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// `s` made safe to print and store: at most [`GUEST_TEXT_MAX`] bytes of it (then
/// `…(N bytes)`), control characters escaped.
pub(crate) fn guest_text(s: &str) -> String {
    let mut cut = s.len().min(GUEST_TEXT_MAX);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + 16);
    push_escaped(&mut out, &s[..cut]);
    if cut < s.len() {
        let _ = write!(out, "…({} bytes)", s.len());
    }
    out
}

/// One line of a guest's stderr made safe to forward to the host's: invalid UTF-8 becomes
/// U+FFFD and control characters are escaped, except tab and a final newline. Not truncated:
/// the forwarder already splits lines at `STDERR_LINE_MAX`.
pub(crate) fn escape_line(line: &[u8]) -> Vec<u8> {
    let (body, newline) = match line.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (line, false),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 1);
    push_escaped(&mut out, &text);
    if newline {
        out.push('\n');
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_tab_kept() {
        assert_eq!(guest_text("a\tb"), "a\tb");
        assert_eq!(guest_text("x\r[pid 0] cell: ok"), "x\\u{d}[pid 0] cell: ok");
        assert_eq!(guest_text("\x1b]0;pwned\x07"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(guest_text("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(guest_text("ab\u{202e}cd"), "ab\\u{202e}cd");
        assert_eq!(guest_text("line\nnext"), "line\\u{a}next");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = guest_text(&long);
        assert!(cut.len() <= GUEST_TEXT_MAX + 20, "{}", cut.len());
        assert!(cut.ends_with("…(2000 bytes)"), "{cut}");
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn stderr_lines_keep_their_newline_only() {
        assert_eq!(escape_line(b"hi\r\n"), b"hi\\u{d}\n");
        assert_eq!(escape_line(b"\x1b[2J"), b"\\u{1b}[2J");
        assert_eq!(escape_line(b"a\tb\n"), b"a\tb\n");
        assert_eq!(escape_line(b"\xff\n"), "\u{fffd}\n".as_bytes());
    }
}
