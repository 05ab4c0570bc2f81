//! NumPy's `.npy` format (version 1.0), the bytes of a Flower `Array`: a magic string, a
//! header dictionary in Python literal syntax, then the values in C order.
//!
//! Writing follows `numpy.save` (numpy 2.x) byte for byte, so that an array's Flower object
//! id is the one Python computes: the header is
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }`, then spaces for 21 digits of
//! growth of the first axis, padded with spaces so that magic, length and header end on a
//! multiple of 64 bytes, and a newline. Reading accepts any header numpy writes for a
//! little-endian, C-order array of the dtypes below, and checks the length exactly.

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// numpy pads headers so that the data starts on this boundary.
const ALIGN: usize = 64;
/// numpy leaves room for this many digits of the first axis (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_DIGITS: usize = 21;
/// The largest header dptrain reads (numpy's limit for untrusted input is 10,000 bytes).
const MAX_HEADER: usize = 10_000;

/// The element types dptrain exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`.
    F32,
    /// `<f8`.
    F64,
    /// `<i8` (Flower's SecAgg+ masked vectors).
    I64,
}

impl Dtype {
    /// numpy's `descr`.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I64 => "<i8",
        }
    }

    /// numpy's name (Flower's `Array.dtype`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::I64 => "int64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    fn from_descr(descr: &str) -> Option<Self> {
        [Dtype::F32, Dtype::F64, Dtype::I64]
            .into_iter()
            .find(|d| d.descr() == descr)
    }
}

/// An array's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// int64.
    I64(Vec<i64>),
}

impl Values {
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::F64(_) => Dtype::F64,
            Values::I64(_) => Dtype::I64,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A C-order array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape (empty: a scalar).
    pub shape: Vec<usize>,
    /// The values, as many as the shape's product.
    pub values: Values,
}

impl NpyArray {
    /// An array of `values` with `shape`; refuses a shape whose product is not their count.
    pub fn new(shape: Vec<usize>, values: Values) -> Result<Self> {
        let count = element_count(&shape).ok_or_else(|| {
            Error::invalid("npy shape", format!("{shape:?}"), "a shape whose size fits")
        })?;
        if count != values.len() {
            return Err(Error::invalid(
                "npy array",
                format!("{} values for shape {shape:?}", values.len()),
                format!("{count} values"),
            ));
        }
        Ok(NpyArray { shape, values })
    }

    /// The `.npy` bytes, as `numpy.save(allow_pickle=False)` writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [one] => format!("({one},)"),
            dims => format!(
                "({})",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.values.dtype().descr()
        );
        // Room to grow the first axis in place (none for a scalar), then numpy's padding:
        // 64 − (10 + header + newline) mod 64 spaces, a whole 64 when already aligned.
        if let Some(first) = self.shape.first() {
            let digits = first.to_string().len();
            header.push_str(&" ".repeat(GROWTH_DIGITS.saturating_sub(digits)));
        }
        let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
        header.push_str(&" ".repeat(ALIGN - unpadded % ALIGN));
        header.push('\n');
        let mut out = Vec::with_capacity(
            MAGIC.len() + 4 + header.len() + self.values.len() * self.values.dtype().size(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        match &self.values {
            Values::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Values::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Values::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
        out
    }

    /// Reads `.npy` bytes: version 1.0, 2.0 or 3.0, a little-endian float32, float64 or
    /// int64 array in C order, exactly as many data bytes as the shape needs.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str, found: String, expected: &str| {
            Err(Error::invalid(format!("npy {what}"), found, expected))
        };
        if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
            return bad(
                "magic",
                format!("{} bytes", bytes.len()),
                "an .npy file (\\x93NUMPY)",
            );
        }
        let (major, minor) = (bytes[6], bytes[7]);
        let (header_len, start) = match major {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            _ => {
                return bad("version", format!("{major}.{minor}"), "1.0, 2.0 or 3.0");
            }
        };
        if header_len > MAX_HEADER || bytes.len() < start + header_len {
            return bad(
                "header",
                format!("{header_len} bytes in a file of {}", bytes.len()),
                "a complete header of at most 10,000 bytes",
            );
        }
        let header = std::str::from_utf8(&bytes[start..start + header_len])
            .map_err(|_| Error::invalid("npy header", "non-UTF-8 bytes", "Python literal text"))?;
        let (descr, fortran, shape) = parse_header(header)?;
        let dtype = match Dtype::from_descr(&descr) {
            Some(dtype) => dtype,
            None => {
                return bad(
                    "dtype",
                    descr,
                    "<f4 (float32), <f8 (float64) or <i8 (int64), little-endian",
                );
            }
        };
        if fortran {
            return bad("fortran_order", "True".into(), "False (C order)");
        }
        let count = match element_count(&shape) {
            Some(count) => count,
            None => return bad("shape", format!("{shape:?}"), "a shape whose size fits"),
        };
        let data = &bytes[start + header_len..];
        if Some(data.len()) != count.checked_mul(dtype.size()) {
            return bad(
                "data",
                format!("{} bytes", data.len()),
                &format!("{count} × {} bytes for shape {shape:?}", dtype.size()),
            );
        }
        let values = match dtype {
            Dtype::F32 => Values::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            Dtype::F64 => Values::F64(
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
            Dtype::I64 => Values::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ),
        };
        Ok(NpyArray { shape, values })
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The three keys of a header dictionary: descr, fortran_order, shape. The parser reads the
/// subset of Python literal syntax numpy writes (strings in quotes, True/False, tuples of
/// integers) and refuses anything else, and any missing or unknown key.
fn parse_header(header: &str) -> Result<(String, bool, Vec<usize>)> {
    let bad = |why: &str| {
        Error::invalid(
            "npy header",
            header.trim_end().chars().take(120).collect::<String>(),
            format!("a dictionary of descr, fortran_order and shape ({why})"),
        )
    };
    let body = header
        .trim_end()
        .strip_prefix('{')
        .and_then(|h| h.strip_suffix('}'))
        .ok_or_else(|| bad("braces"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest).ok_or_else(|| bad("a quoted key"))?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("a colon"))?
            .trim_start();
        rest = match key {
            "descr" if descr.is_none() => {
                let (value, after) = quoted(after).ok_or_else(|| bad("a quoted descr"))?;
                descr = Some(value.to_string());
                after
            }
            "fortran_order" if fortran.is_none() => {
                let (value, after) = if let Some(a) = after.strip_prefix("False") {
                    (false, a)
                } else if let Some(a) = after.strip_prefix("True") {
                    (true, a)
                } else {
                    return Err(bad("fortran_order True or False"));
                };
                fortran = Some(value);
                after
            }
            "shape" if shape.is_none() => {
                let inner = after
                    .strip_prefix('(')
                    .ok_or_else(|| bad("a shape tuple"))?;
                let end = inner.find(')').ok_or_else(|| bad("a closed shape tuple"))?;
                let dims = inner[..end]
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(|d| d.parse::<usize>().map_err(|_| bad("integer dimensions")))
                    .collect::<Result<Vec<_>>>()?;
                shape = Some(dims);
                &inner[end + 1..]
            }
            _ => return Err(bad("no unknown or repeated keys")),
        };
        rest = rest.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(after) => after.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(bad("commas between items")),
        };
    }
    match (descr, fortran, shape) {
        (Some(descr), Some(fortran), Some(shape)) => Ok((descr, fortran, shape)),
        _ => Err(bad("all three keys")),
    }
}

/// A string in single or double quotes at the start of `text` (no escapes), and the rest.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = text[1..].find(quote)? + 1;
    Some((&text[1..end], &text[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.save` of float32 [1, 2, 3] by numpy 2.4.6 (from a Flower ArrayChunk body, made
    /// by flwr 1.42.0's own code: /work/notes/flwr-object-tree-example.json).
    const NUMPY_F32_123: &str = "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000803f0000004000004040";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn arrays_are_written_as_numpy_writes_them_and_read_back() {
        let array = NpyArray::new(vec![3], Values::F32(vec![1.0, 2.0, 3.0])).unwrap();
        assert_eq!(array.to_bytes(), hex(NUMPY_F32_123));
        assert_eq!(NpyArray::from_bytes(&hex(NUMPY_F32_123)).unwrap(), array);
        for array in [
            NpyArray::new(
                vec![2, 3],
                Values::F64(vec![0.5, -1.0, 2.0, 3.0, 4.0, 1e300]),
            )
            .unwrap(),
            NpyArray::new(vec![4], Values::I64(vec![i64::MIN, -1, 0, i64::MAX])).unwrap(),
            NpyArray::new(vec![], Values::F32(vec![7.0])).unwrap(),
            NpyArray::new(vec![0], Values::F32(vec![])).unwrap(),
            NpyArray::new(vec![123_456], Values::F32(vec![0.25; 123_456])).unwrap(),
        ] {
            let bytes = array.to_bytes();
            let preamble = bytes.len() - array.values.len() * array.values.dtype().size();
            assert_eq!(preamble % 64, 0, "{:?}", array.shape);
            assert_eq!(NpyArray::from_bytes(&bytes).unwrap(), array);
        }
        assert!(NpyArray::new(vec![2, 2], Values::F32(vec![1.0])).is_err());
        // numpy 2.4.6's headers for a 2×3 float64 array and a float32 scalar.
        let header = |array: NpyArray| String::from_utf8(array.to_bytes()[10..128].to_vec());
        let matrix = NpyArray::new(vec![2, 3], Values::F64(vec![0.0; 6])).unwrap();
        let expected = format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }}{}\n",
            " ".repeat(58)
        );
        assert_eq!(header(matrix).unwrap(), expected);
        let scalar = NpyArray::new(vec![], Values::F32(vec![7.0])).unwrap();
        let expected = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': (), }}{}\n",
            " ".repeat(62)
        );
        assert_eq!(header(scalar).unwrap(), expected);
    }

    #[test]
    fn the_reader_refuses_other_dtypes_orders_shapes_and_lengths() {
        let good = hex(NUMPY_F32_123);
        let with_header = |header: &str, data: &[u8]| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out
        };
        let cases = [
            (
                with_header(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }\n",
                    &good[128..],
                ),
                "dtype",
            ),
            (
                with_header(
                    "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }\n",
                    &good[128..],
                ),
                "dtype",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }\n",
                    &good[128..],
                ),
                "fortran_order",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n",
                    &good[128..],
                ),
                "data",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}\n",
                    &good[128..],
                ),
                "header",
            ),
            (
                with_header("{'descr': '<f4', 'shape': (3,), }\n", &good[128..]),
                "header",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }\n",
                    &good[128..],
                ),
                "header",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,99999999999,99999999999), }\n",
                    &[],
                ),
                "shape",
            ),
            (good[..good.len() - 1].to_vec(), "data"),
            (good[..50].to_vec(), "header"),
            (b"PK\x03\x04 not npy".to_vec(), "magic"),
        ];
        for (bytes, what) in cases {
            let error = NpyArray::from_bytes(&bytes).unwrap_err().to_string();
            assert!(error.contains(&format!("npy {what}")), "{what}: {error}");
        }
    }

    #[test]
    fn random_bytes_and_truncations_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let good = hex(NUMPY_F32_123);
        for cut in 0..good.len() {
            let _ = NpyArray::from_bytes(&good[..cut]);
        }
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            let _ = NpyArray::from_bytes(&bytes);
            let noise: Vec<u8> = (0..rng.random_range(0..300))
                .map(|_| rng.random())
                .collect();
            let _ = NpyArray::from_bytes(&noise);
        }
    }
}
