//! Reading newline-delimited JSON with a bound on line length.
//!
//! Both the bridge (a TCP peer) and replay (a file) read NDJSON. An
//! unbounded `read_line` lets one peer that never sends `\n` grow a buffer
//! until the process dies, so an over-long line is reported and skipped up
//! to its newline instead, and the stream stays usable.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// One line, without its `\n` (and `\r`), or the length of a line that was
/// too long and has been skipped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Text(Vec<u8>),
    TooLong { len: usize },
}

pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
    /// Bytes of the current over-long line seen so far (we are skipping it).
    skipping: Option<usize>,
    /// Report an over-long line as soon as it passes `max`, without reading
    /// the rest of it (the caller closes the stream).
    strict: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, reader),
            max,
            buf: Vec::new(),
            skipping: None,
            strict: false,
        }
    }

    /// A reader that gives up on a stream at its first over-long line: it
    /// returns [`Line::TooLong`] with the bytes seen so far, at most a
    /// buffer past `max`, and must not be read again.
    pub(crate) fn strict(reader: R, max: usize) -> Self {
        LineReader {
            strict: true,
            ..LineReader::new(reader, max)
        }
    }

    /// The next line, or `None` at end of input. A last line without a
    /// trailing newline still counts as a line.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if let Some(len) = self.skipping.take() {
                    return Ok(Some(Line::TooLong { len }));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let chunk_len = chunk.len();
            match &mut self.skipping {
                Some(len) => *len += chunk_len,
                None if self.buf.len() + chunk_len > self.max && self.strict => {
                    let len = self.buf.len() + chunk_len;
                    self.buf.clear();
                    return Ok(Some(Line::TooLong { len }));
                }
                None if self.buf.len() + chunk_len > self.max => {
                    self.skipping = Some(self.buf.len() + chunk_len);
                    self.buf.clear();
                }
                None => self.buf.extend_from_slice(chunk),
            }
            self.inner.consume(chunk_len + usize::from(newline));
            if newline {
                if let Some(len) = self.skipping.take() {
                    return Ok(Some(Line::TooLong { len }));
                }
                return Ok(Some(self.take_line()));
            }
        }
    }

    fn take_line(&mut self) -> Line {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Line::Text(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = r.next().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn splits_lines_and_strips_cr() {
        let lines = read_all(b"a\r\nbb\n\nccc", 10).await;
        assert_eq!(lines, vec![text("a"), text("bb"), text(""), text("ccc")]);
    }

    #[tokio::test]
    async fn skips_over_long_lines_and_carries_on() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200_000));
        input.extend(b"\nafter\n");
        input.extend(std::iter::repeat_n(b'y', 50));
        let lines = read_all(&input, 16).await;
        assert_eq!(
            lines,
            vec![
                text("ok"),
                Line::TooLong { len: 200_000 },
                text("after"),
                Line::TooLong { len: 50 }
            ]
        );
    }

    #[tokio::test]
    async fn strict_stops_at_the_first_over_long_line() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1_000_000));
        let mut r = LineReader::strict(&input[..], 16);
        assert_eq!(r.next().await.unwrap(), Some(text("ok")));
        let Some(Line::TooLong { len }) = r.next().await.unwrap() else {
            panic!()
        };
        // It gave up within one buffer of the limit, not at the end.
        assert!(len > 16 && len <= 64 * 1024 + 16, "{len}");
    }

    #[tokio::test]
    async fn a_line_of_exactly_max_is_fine() {
        let lines = read_all(b"12345\n123456\n", 5).await;
        assert_eq!(lines, vec![text("12345"), Line::TooLong { len: 6 }]);
    }
}
