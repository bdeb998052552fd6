//! Finding a request's `id` in a line that cannot be parsed: broken, truncated, or too long
//! to keep ([`Skeleton`], the top level of an over-long line, fed as it is read).
//!
//! It reads bytes only: it decides nothing about a line (that is [`super::classify`]) and
//! writes nothing (that is the reader in [`super`]).

use serde_json::Value;

/// How much of an over-long line is kept to find its `id`.
const ID_PREFIX: usize = 64 * 1024;

/// The top level of a JSON text, read a piece at a time: every member of the top-level
/// object with object and array values emptied (`"params":{}`) and strings cut at 1 KiB, at
/// most [`ID_PREFIX`] bytes of it. Enough for [`recover_id`], without keeping the line.
#[derive(Default)]
pub(super) struct Skeleton {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Bytes kept of the top-level string being read.
    string_kept: usize,
    pub(super) out: Vec<u8>,
}

impl Skeleton {
    const STRING_KEPT: usize = 1024;

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let top = self.depth == 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if top {
                        if self.string_kept > Self::STRING_KEPT {
                            // Cut short: drop a dangling escape before closing the string.
                            while self.out.last() == Some(&b'\\') {
                                self.out.pop();
                            }
                        }
                        self.keep(b'"');
                    }
                    continue;
                }
                if top {
                    self.string_kept += 1;
                    if self.string_kept <= Self::STRING_KEPT {
                        self.keep(b);
                    }
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.string_kept = 0;
                    if top {
                        self.keep(b);
                    }
                }
                b'{' | b'[' => {
                    if self.depth <= 1 {
                        self.keep(b);
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth <= 2 {
                        self.keep(b);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ if top => self.keep(b),
                _ => {}
            }
        }
    }

    fn keep(&mut self, b: u8) {
        if self.out.len() < ID_PREFIX {
            self.out.push(b);
        }
    }
}

/// The `id` member of the top-level object, read by a scanner that needs neither the rest of
/// the line to be valid nor complete: a string or a number, else `None`.
pub(super) fn recover_id(text: &[u8]) -> Option<Value> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let end = string_end(text, i)?;
                if depth == 1 && &text[i..=end] == b"\"id\"" {
                    let mut j = end + 1;
                    while j < text.len() && text[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if text.get(j) == Some(&b':') {
                        return id_value(text, j + 1);
                    }
                }
                i = end + 1;
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the quote that closes the string opening at `start`.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut escaped = false;
    for (offset, &b) in text[start + 1..].iter().enumerate() {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some(start + 1 + offset),
            _ => {}
        }
    }
    None
}

fn id_value(text: &[u8], from: usize) -> Option<Value> {
    let mut i = from;
    while i < text.len() && text[i].is_ascii_whitespace() {
        i += 1;
    }
    let end = match text.get(i)? {
        b'"' => string_end(text, i)? + 1,
        b'-' | b'0'..=b'9' => {
            let mut j = i + 1;
            while j < text.len() && matches!(text[j], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                j += 1;
            }
            j
        }
        _ => return None,
    };
    serde_json::from_slice::<Value>(&text[i..end])
        .ok()
        .filter(|v| v.is_string() || v.is_number())
}
