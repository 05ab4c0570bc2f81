//! The IDX file format of MNIST (LeCun et al.), optionally gzip-compressed, and SHA-256
//! checks against a `SHA256SUMS` file.
//!
//! Layout: a big-endian u32 magic `0x0000_08_NN` (type 0x08 = unsigned byte, NN = number of
//! dimensions), NN big-endian u32 sizes, then the values row-major.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Sizes of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

fn parse_error(path: &Path, location: &str, message: String) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        location: location.to_string(),
        message,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads an IDX file of unsigned bytes with `expected_dims` dimensions; gzip is detected from
/// the content. Errors name the file and say what is wrong (wrong magic, truncated data,
/// trailing bytes, a corrupt gzip stream).
pub fn read_idx(path: &Path, expected_dims: usize) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(io_error(path))?;
    parse_idx(&raw, path, expected_dims)
}

/// `raw` decompressed when it starts with the gzip magic, else as it is; `path` is used in
/// messages (a corrupt or truncated stream is named as such).
pub fn gunzip_if_gzip<'a>(raw: &'a [u8], path: &Path) -> Result<std::borrow::Cow<'a, [u8]>> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len() * 5);
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| {
            parse_error(
                path,
                "gzip stream",
                format!("cannot decompress ({e}); the file is corrupt or truncated"),
            )
        })?;
    Ok(std::borrow::Cow::Owned(out))
}

/// [`read_idx`] on bytes already in memory; `path` is used in messages.
pub fn parse_idx(raw: &[u8], path: &Path, expected_dims: usize) -> Result<IdxArray> {
    let bytes = gunzip_if_gzip(raw, path)?;
    let header_len = 4 + 4 * expected_dims;
    if bytes.len() < 4 {
        return Err(parse_error(
            path,
            "byte 0",
            format!("truncated: {} bytes, an IDX header needs 4", bytes.len()),
        ));
    }
    let expected_magic = [0, 0, 0x08, expected_dims as u8];
    if bytes[..4] != expected_magic {
        return Err(parse_error(
            path,
            "byte 0",
            format!(
                "wrong IDX magic {:02x}{:02x}{:02x}{:02x}: expected {:02x}{:02x}{:02x}{:02x} \
                 (unsigned bytes, {expected_dims} dimensions)",
                bytes[0],
                bytes[1],
                bytes[2],
                bytes[3],
                expected_magic[0],
                expected_magic[1],
                expected_magic[2],
                expected_magic[3]
            ),
        ));
    }
    if bytes.len() < header_len {
        return Err(parse_error(
            path,
            "header",
            format!(
                "truncated: {} bytes, the header of a {expected_dims}-dimensional IDX file needs {header_len}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected_len = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let found = bytes.len() - header_len;
    match expected_len {
        Some(n) if n == found => Ok(IdxArray {
            dims,
            data: bytes[header_len..].to_vec(),
        }),
        Some(n) if n > found => Err(parse_error(
            path,
            "data",
            format!("truncated: dimensions {dims:?} need {n} bytes of data, found {found}"),
        )),
        Some(n) => Err(parse_error(
            path,
            "data",
            format!(
                "{} trailing bytes after the {n} bytes that dimensions {dims:?} describe",
                found - n
            ),
        )),
        None => Err(parse_error(
            path,
            "header",
            format!("dimensions {dims:?} overflow"),
        )),
    }
}

/// The checksums listed in `SHA256SUMS` (`<hex>  <file name>` per line).
pub fn read_sha256sums(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let mut sums = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(hex), Some(name), None)
                if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                sums.insert(name.trim_start_matches('*').to_string(), hex.to_lowercase());
            }
            _ => {
                return Err(parse_error(
                    path,
                    &format!("line {}", number + 1),
                    format!("expected `<64 hex digits>  <file name>`, found `{line}`"),
                ));
            }
        }
    }
    Ok(sums)
}

/// Checks `path`'s SHA-256 against `sums` (keyed by file name).
pub fn verify_sha256(path: &Path, sums: &HashMap<String, String>, sums_path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = sums.get(&name).ok_or_else(|| {
        parse_error(
            sums_path,
            "file list",
            format!("no checksum for `{name}`; add one or set data.verify_checksums = false"),
        )
    })?;
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let found: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if &found != expected {
        return Err(parse_error(
            path,
            "contents",
            format!(
                "SHA-256 mismatch: expected {expected} (from {}), found {found}; the file is \
                 corrupt or not the one shipped",
                sums_path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn parse(bytes: &[u8], dims: usize) -> Result<IdxArray> {
        parse_idx(bytes, Path::new("x.idx"), dims)
    }

    #[test]
    fn reads_plain_and_gzipped_arrays() {
        let plain = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let expected = IdxArray {
            dims: vec![2, 3],
            data: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(parse(&plain, 2).unwrap(), expected);
        assert_eq!(parse(&gzip(&plain), 2).unwrap(), expected);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (vec![0, 0], 1, "truncated: 2 bytes"),
            (
                idx(&[3], &[1, 2, 3]),
                3,
                "wrong IDX magic 00000801: expected 00000803",
            ),
            (
                vec![0, 0, 9, 1, 0, 0, 0, 1, 7],
                1,
                "wrong IDX magic 00000901",
            ),
            (
                vec![0, 0, 8, 3, 0, 0],
                3,
                "the header of a 3-dimensional IDX file needs 16",
            ),
            (
                idx(&[2, 3], &[1, 2, 3]),
                2,
                "truncated: dimensions [2, 3] need 6 bytes of data, found 3",
            ),
            (idx(&[2], &[1, 2, 3]), 1, "1 trailing bytes"),
            (
                gzip(&idx(&[4], &[1, 2, 3, 4]))[..20].to_vec(),
                1,
                "cannot decompress",
            ),
        ];
        for (bytes, dims, expected) in cases {
            let err = parse(&bytes, dims).unwrap_err().to_string();
            assert!(err.starts_with("x.idx:"), "{err}");
            assert!(err.contains(expected), "`{err}` lacks `{expected}`");
        }
    }

    #[test]
    fn sha256sums_lines_are_checked() {
        let dir = std::env::temp_dir().join(format!("dptrain-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let sums_path = dir.join("SHA256SUMS");
        std::fs::write(&sums_path, format!("{good}  a.bin\n")).unwrap();
        let sums = read_sha256sums(&sums_path).unwrap();
        verify_sha256(&file, &sums, &sums_path).unwrap();
        std::fs::write(&file, b"abd").unwrap();
        let err = verify_sha256(&file, &sums, &sums_path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SHA-256 mismatch"), "{err}");
        std::fs::write(&sums_path, "xyz a.bin\n").unwrap();
        let err = read_sha256sums(&sums_path).unwrap_err().to_string();
        assert!(err.contains("line 1: expected `<64 hex digits>"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
