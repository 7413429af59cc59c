//! Cutting one output stream into log entries, as docker's log copier does:
//! an entry per line, newline included (a `\r` before it stays in the line);
//! a line longer than [`MAX_ENTRY`] bytes goes out in pieces of that size,
//! each without a newline, the last piece with it; and what is left when the
//! stream ends goes out as it is.

/// The most bytes one entry holds (docker's 16 KiB buffer).
pub const MAX_ENTRY: usize = 16 * 1024;

/// Holds the unfinished line of one stream between reads.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter {
            pending: Vec::with_capacity(MAX_ENTRY),
        }
    }

    /// Takes what the stream produced next; hands every finished entry to
    /// `emit`, in order.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_ENTRY - self.pending.len();
            let window = &data[..room.min(data.len())];
            match window.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    let line = &data[..=newline];
                    if self.pending.is_empty() {
                        emit(line);
                    } else {
                        self.pending.extend_from_slice(line);
                        emit(&self.pending);
                        self.pending.clear();
                    }
                    data = &data[newline + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    data = &data[window.len()..];
                    if self.pending.len() == MAX_ENTRY {
                        emit(&self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: hands what is left (a line without its newline), if
    /// anything, to `emit`.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of `chunks` fed one after another, then the stream's end.
    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::new();
        let mut entries = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |e| entries.push(e.to_vec()));
        }
        splitter.finish(|e| entries.push(e.to_vec()));
        entries
    }

    #[test]
    fn lines_keep_their_newline_and_carriage_return() {
        assert_eq!(
            split(&[b"one\ntwo\r\n", b"\n", b"three\n"]),
            [&b"one\n"[..], b"two\r\n", b"\n", b"three\n"]
        );
    }

    #[test]
    fn a_line_across_reads_is_one_entry() {
        assert_eq!(
            split(&[b"hel", b"lo", b" world\nnext"]),
            [&b"hello world\n"[..], b"next"]
        );
    }

    #[test]
    fn what_is_left_at_the_end_goes_out_without_a_newline() {
        assert_eq!(split(&[b"a\nno newline"]), [&b"a\n"[..], b"no newline"]);
        assert!(split(&[b""]).is_empty());
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn long_lines_go_out_in_16k_pieces() {
        let long = vec![b'x'; 2 * MAX_ENTRY + 10];
        let mut input = long.clone();
        input.push(b'\n');
        input.extend_from_slice(b"after\n");
        // Fed in odd chunk sizes, and fed at once: the same entries.
        for chunk in [7, 4096, input.len()] {
            let chunks: Vec<&[u8]> = input.chunks(chunk).collect();
            let entries = split(&chunks);
            assert_eq!(entries.len(), 4, "chunks of {chunk}");
            assert_eq!(entries[0], long[..MAX_ENTRY]);
            assert_eq!(entries[1], long[..MAX_ENTRY]);
            assert_eq!(entries[2], b"xxxxxxxxxx\n");
            assert_eq!(entries[3], b"after\n");
        }
    }

    #[test]
    fn the_16k_boundary() {
        // One byte short of the limit, with its newline: one entry.
        let mut fits = vec![b'y'; MAX_ENTRY - 1];
        fits.push(b'\n');
        assert_eq!(split(&[&fits]), [fits.clone()]);
        // Exactly the limit before the newline: the piece, then the newline
        // alone (docker's partial and last entries).
        let mut full = vec![b'z'; MAX_ENTRY];
        full.push(b'\n');
        assert_eq!(
            split(&[&full]),
            [full[..MAX_ENTRY].to_vec(), b"\n".to_vec()]
        );
    }
}
