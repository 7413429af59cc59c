//! Sparse files in GNU tar's PAX formats (`tar --sparse --format=posix`),
//! which the `tar` crate hands over undecoded: format 1.0 keeps the map of
//! data segments at the start of the entry's data, format 0.1 in a PAX
//! record; the entry's data is then the segments, back to back. (GNU's old
//! `S` headers are decoded by the `tar` crate itself.)

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::error::{Context, Error, Result};

/// Most data segments a sparse map may list.
const MAX_SEGMENTS: usize = 1 << 20;

/// Where the map of a sparse file is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Map {
    /// At the start of the entry's data (format 1.0).
    InData,
    /// `(offset, length)` pairs from `GNU.sparse.map` (format 0.1).
    Given(Vec<(u64, u64)>),
}

/// A sparse file described by `GNU.sparse.*` PAX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SparseFile {
    /// The file's real name (the header holds a made-up one).
    pub name: Option<Vec<u8>>,
    /// The file's full size, holes included.
    pub real_size: u64,
    map: Map,
}

fn invalid(what: &str) -> Error {
    Error::invalid(format!("sparse file: {what}"))
}

fn number(bytes: &[u8], what: &str) -> Result<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| invalid(&format!("{what} is not a number")))
}

impl SparseFile {
    /// Reads the sparse description from an entry's PAX records, if any.
    pub fn from_pax<'a>(
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Option<Self>> {
        let (mut sparse, mut major, mut name, mut real_size, mut map) =
            (false, None, None, None, None);
        for (key, value) in records {
            let Some(key) = key.strip_prefix(b"GNU.sparse.") else {
                continue;
            };
            sparse = true;
            match key {
                b"major" => major = Some(number(value, "major version")?),
                b"name" => name = Some(value.to_vec()),
                b"realsize" | b"size" => real_size = Some(number(value, "real size")?),
                b"map" => map = Some(value.to_vec()),
                b"offset" | b"numbytes" => {
                    return Err(invalid("format 0.0 is not supported"));
                }
                _ => {}
            }
        }
        if !sparse {
            return Ok(None);
        }
        let real_size = real_size.ok_or_else(|| invalid("no real size"))?;
        let map = match (major, map) {
            (Some(1), _) => Map::InData,
            (_, Some(map)) => Map::Given(parse_map(&map)?),
            _ => return Err(invalid("unknown format")),
        };
        Ok(Some(SparseFile {
            name,
            real_size,
            map,
        }))
    }

    /// Writes the file from the entry's `data` into `file`, holes left as
    /// holes.
    pub fn write(&self, data: &mut impl Read, file: &File) -> Result<()> {
        let segments = match &self.map {
            Map::Given(segments) => segments.clone(),
            Map::InData => read_map(data)?,
        };
        let mut end = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        for (offset, length) in segments {
            let segment_end = offset
                .checked_add(length)
                .ok_or_else(|| invalid("segment overflows"))?;
            if offset < end || segment_end > self.real_size {
                return Err(invalid("segments overlap or pass the end of the file"));
            }
            let mut position = offset;
            let mut segment = data.take(length);
            loop {
                let n = segment.read(&mut buf).context("read sparse data")?;
                if n == 0 {
                    break;
                }
                file.write_all_at(&buf[..n], position)
                    .context("write sparse data")?;
                position += n as u64;
            }
            if position != segment_end {
                return Err(invalid("data shorter than its map"));
            }
            end = segment_end;
        }
        file.set_len(self.real_size).context("set sparse file size")
    }
}

fn parse_map(map: &[u8]) -> Result<Vec<(u64, u64)>> {
    let numbers = map
        .split(|b| *b == b',')
        .filter(|n| !n.is_empty())
        .map(|n| number(n, "map entry"))
        .collect::<Result<Vec<_>>>()?;
    if numbers.len() % 2 != 0 || numbers.len() / 2 > MAX_SEGMENTS {
        return Err(invalid("malformed map"));
    }
    Ok(numbers.chunks(2).map(|pair| (pair[0], pair[1])).collect())
}

/// Reads a format 1.0 map: decimal numbers one per line (the count, then
/// offset and length pairs), padded to a 512-byte block.
fn read_map(data: &mut impl Read) -> Result<Vec<(u64, u64)>> {
    let mut consumed = 0u64;
    let mut line = || -> Result<u64> {
        let mut digits = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            data.read_exact(&mut byte).context("read sparse map")?;
            consumed += 1;
            match byte[0] {
                b'\n' => return number(&digits, "map entry"),
                b if b.is_ascii_digit() && digits.len() < 20 => digits.push(b),
                _ => return Err(invalid("malformed map")),
            }
        }
    };
    let count = usize::try_from(line()?).unwrap_or(usize::MAX);
    if count > MAX_SEGMENTS {
        return Err(invalid("too many segments"));
    }
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = line()?;
        let length = line()?;
        segments.push((offset, length));
    }
    let padding = (512 - consumed % 512) % 512;
    io::copy(&mut data.take(padding), &mut io::sink()).context("read sparse map")?;
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_1_0_map_in_data() {
        let records: [(&[u8], &[u8]); 4] = [
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.name", b"dir/file"),
            (b"GNU.sparse.realsize", b"10000"),
        ];
        let sparse = SparseFile::from_pax(records).unwrap().unwrap();
        assert_eq!(sparse.name.as_deref(), Some(b"dir/file".as_slice()));
        let mut data = b"2\n0\n3\n9998\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcyz");
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        sparse.write(&mut data.as_slice(), &file).unwrap();
        let content = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(content.len(), 10000);
        assert_eq!(&content[..3], b"abc");
        assert_eq!(&content[9998..], b"yz");
        assert!(content[3..9998].iter().all(|b| *b == 0));
    }

    #[test]
    fn bad_maps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let v1 = |size: &'static [u8]| {
            SparseFile::from_pax([
                (b"GNU.sparse.major".as_slice(), b"1".as_slice()),
                (b"GNU.sparse.realsize", size),
            ])
            .unwrap()
            .unwrap()
        };
        // A segment past the real size, overlapping segments, short data.
        for (size, map) in [
            (b"10".as_slice(), b"1\n5\n10\n".as_slice()),
            (b"100", b"2\n0\n10\n5\n10\n"),
            (b"100", b"1\n0\n50\n"),
        ] {
            let mut data = map.to_vec();
            data.resize(512, 0);
            data.extend_from_slice(&[1u8; 20]);
            assert!(v1(size).write(&mut data.as_slice(), &file).is_err());
        }
        assert!(
            SparseFile::from_pax([(b"GNU.sparse.offset".as_slice(), b"0".as_slice())]).is_err()
        );
        assert!(SparseFile::from_pax([
            (b"GNU.sparse.map".as_slice(), b"1,2,3".as_slice()),
            (b"GNU.sparse.size", b"9")
        ])
        .is_err());
        assert_eq!(
            SparseFile::from_pax([(b"path".as_slice(), b"x".as_slice())]).unwrap(),
            None
        );
    }
}
