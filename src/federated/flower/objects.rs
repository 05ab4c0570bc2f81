//! Flower's object trees (flwr 1.42, "inflatable objects"): a message travels as objects,
//! each `"<Class> <child ids joined by ','> <body length>" 0x00 <body>`, named by the
//! lowercase hex SHA-256 of those bytes. Objects are pushed and pulled one by one, so a
//! node checks every object's id against its bytes before it reads it.
//!
//! This module has the object layer and the array layer (an `Array` is its `.npy` bytes cut
//! into chunks of at most 5 MiB, each an `ArrayChunk`, equal chunks stored once). JSON
//! bodies are written as Python's `json.dumps` writes them (`", "` and `": "` separators,
//! ASCII only), so a tree built here has the ids Flower computes for the same content.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Flower's largest array chunk (`FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`).
pub const MAX_CHUNK: usize = 5 * 1024 * 1024;
/// The largest object dptrain accepts from the network (a chunk, or a record's body).
pub const MAX_OBJECT: usize = MAX_CHUNK + 4096;

/// The object classes of flwr 1.42's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A message: protobuf metadata; child: its RecordDict (none when it carries an error).
    Message,
    /// `{record name: record id}`.
    RecordDict,
    /// `{array name: array id}`.
    ArrayRecord,
    /// dtype, shape, stype and the chunk order.
    Array,
    /// Raw bytes of a slice of an `.npy` file.
    ArrayChunk,
    /// Protobuf `ConfigRecord`.
    ConfigRecord,
    /// Protobuf `MetricRecord`.
    MetricRecord,
}

impl Class {
    const ALL: [Class; 7] = [
        Class::Message,
        Class::RecordDict,
        Class::ArrayRecord,
        Class::Array,
        Class::ArrayChunk,
        Class::ConfigRecord,
        Class::MetricRecord,
    ];

    /// The class's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Class::Message => "Message",
            Class::RecordDict => "RecordDict",
            Class::ArrayRecord => "ArrayRecord",
            Class::Array => "Array",
            Class::ArrayChunk => "ArrayChunk",
            Class::ConfigRecord => "ConfigRecord",
            Class::MetricRecord => "MetricRecord",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One object: class, children (ids, in order, no repeats) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its class.
    pub class: Class,
    /// Its children's ids.
    pub children: Vec<String>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Object {
    /// An object; repeated children are kept once, in first-occurrence order (as Flower
    /// does).
    pub fn new(class: Class, children: Vec<String>, body: Vec<u8>) -> Self {
        let mut unique: Vec<String> = Vec::with_capacity(children.len());
        for child in children {
            if !unique.contains(&child) {
                unique.push(child);
            }
        }
        Object {
            class,
            children: unique,
            body,
        }
    }

    /// Its bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let head = format!(
            "{} {} {}",
            self.class.name(),
            self.children.join(","),
            self.body.len()
        );
        let mut out = Vec::with_capacity(head.len() + 1 + self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.body);
        out
    }

    /// Its id: the lowercase hex SHA-256 of its bytes.
    pub fn id(&self) -> String {
        object_id(&self.encode())
    }

    /// Reads an object received as `id`: the bytes must hash to `id`, the head must name a
    /// known class, valid child ids and the body's exact length.
    pub fn decode(id: &str, content: &[u8]) -> Result<Self> {
        let what = || format!("Flower object {}", short(id));
        if content.len() > MAX_OBJECT {
            return Err(Error::invalid(
                what(),
                format!("{} bytes", content.len()),
                format!("at most {MAX_OBJECT} bytes"),
            ));
        }
        let actual = object_id(content);
        if actual != id {
            return Err(Error::invalid(
                what(),
                format!("bytes whose SHA-256 is {}", short(&actual)),
                "bytes that hash to the object's id",
            ));
        }
        let zero = content.iter().position(|&b| b == 0).ok_or_else(|| {
            Error::invalid(
                what(),
                "no 0x00 after the head",
                "<class> <children> <length>\\0<body>",
            )
        })?;
        let head = std::str::from_utf8(&content[..zero])
            .map_err(|_| Error::invalid(what(), "a head that is not UTF-8", "an ASCII head"))?;
        let parts: Vec<&str> = head.split(' ').collect();
        let [class, children, length] = parts[..] else {
            return Err(Error::invalid(
                what(),
                format!("head {head:?}"),
                "three space-separated fields: class, children, body length",
            ));
        };
        let class = Class::from_name(class).ok_or_else(|| {
            Error::invalid(
                what(),
                format!("class {class:?}"),
                "Message, RecordDict, ArrayRecord, Array, ArrayChunk, ConfigRecord or MetricRecord",
            )
        })?;
        let children: Vec<String> = match children {
            "" => Vec::new(),
            list => list.split(',').map(str::to_string).collect(),
        };
        if let Some(bad) = children.iter().find(|c| !is_id(c)) {
            return Err(Error::invalid(
                what(),
                format!("child id {:?}", short(bad)),
                "64 lowercase hex digits",
            ));
        }
        let body = &content[zero + 1..];
        if length.parse::<usize>().ok() != Some(body.len()) {
            return Err(Error::invalid(
                what(),
                format!(
                    "a body of {} bytes where the head says {length:?}",
                    body.len()
                ),
                "the length the head states",
            ));
        }
        if children
            .iter()
            .enumerate()
            .any(|(i, c)| children[..i].contains(c))
        {
            return Err(Error::invalid(
                what(),
                "a repeated child",
                "distinct children",
            ));
        }
        Ok(Object {
            class,
            children,
            body: body.to_vec(),
        })
    }
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn object_id(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `id` is 64 lowercase hex digits.
pub fn is_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// A JSON string as Python's `json.dumps` writes it (ASCII only, `\uXXXX` escapes).
fn python_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{"name": "id", ...}` as `json.dumps` writes an ordered dict of strings.
pub fn names_body(items: &[(String, String)]) -> Vec<u8> {
    let inner: Vec<String> = items
        .iter()
        .map(|(k, v)| format!("{}: {}", python_json_string(k), python_json_string(v)))
        .collect();
    format!("{{{}}}", inner.join(", ")).into_bytes()
}

/// The ordered `(name, id)` pairs of a RecordDict or ArrayRecord body.
pub fn parse_names(object: &Object) -> Result<Vec<(String, String)>> {
    struct Pairs(Vec<(String, String)>);
    impl<'de> Deserialize<'de> for Pairs {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Pairs;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object of strings")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Pairs, A::Error> {
                    let mut pairs = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, String>()? {
                        pairs.push((k, v));
                    }
                    Ok(Pairs(pairs))
                }
            }
            d.deserialize_map(V)
        }
    }
    let what = || format!("Flower {} body", object.class.name());
    let Pairs(pairs) = serde_json::from_slice(&object.body)
        .map_err(|e| Error::invalid(what(), e, "a JSON object of names to object ids"))?;
    for (name, id) in &pairs {
        if !is_id(id) || !object.children.contains(id) {
            return Err(Error::invalid(
                what(),
                format!("{name:?} → {:?}", short(id)),
                "the id of one of the object's children",
            ));
        }
    }
    if pairs
        .iter()
        .any(|(name, _)| pairs.iter().filter(|(n, _)| n == name).count() > 1)
    {
        return Err(Error::invalid(what(), "a repeated name", "distinct names"));
    }
    Ok(pairs)
}

/// An `Array` object's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayHead {
    /// numpy's dtype name (`float32`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// `numpy.ndarray` for `.npy` bytes.
    pub stype: String,
    /// For each slice of the `.npy` bytes in order, the index of its chunk among the
    /// object's children.
    pub arraychunk_ids: Vec<usize>,
}

impl ArrayHead {
    fn body(&self) -> Vec<u8> {
        let list = |v: &[usize]| {
            v.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{{\"dtype\": {}, \"shape\": [{}], \"stype\": {}, \"arraychunk_ids\": [{}]}}",
            python_json_string(&self.dtype),
            list(&self.shape),
            python_json_string(&self.stype),
            list(&self.arraychunk_ids)
        )
        .into_bytes()
    }
}

/// An array as objects: the `Array` and its distinct chunks (children first).
pub fn deflate_array(dtype: &str, shape: &[usize], npy: &[u8], chunk: usize) -> Vec<Object> {
    let chunk = chunk.clamp(1, MAX_CHUNK);
    let mut chunks: Vec<Object> = Vec::new();
    let mut order = Vec::new();
    for slice in npy.chunks(chunk) {
        let object = Object::new(Class::ArrayChunk, Vec::new(), slice.to_vec());
        let at = match chunks.iter().position(|c| c.body == object.body) {
            Some(at) => at,
            None => {
                chunks.push(object);
                chunks.len() - 1
            }
        };
        order.push(at);
    }
    let head = ArrayHead {
        dtype: dtype.into(),
        shape: shape.to_vec(),
        stype: "numpy.ndarray".into(),
        arraychunk_ids: order,
    };
    let array = Object::new(
        Class::Array,
        chunks.iter().map(Object::id).collect(),
        head.body(),
    );
    chunks.push(array);
    chunks
}

/// The `.npy` bytes of an `Array` object from its chunks (`chunk(id)` gives a child).
pub fn inflate_array<'a>(
    array: &Object,
    chunk: &dyn Fn(&str) -> Option<&'a Object>,
) -> Result<(ArrayHead, Vec<u8>)> {
    let what = "Flower Array body";
    if array.class != Class::Array {
        return Err(Error::invalid(what, array.class.name(), "an Array object"));
    }
    let head: ArrayHead = serde_json::from_slice(&array.body)
        .map_err(|e| Error::invalid(what, e, "dtype, shape, stype and arraychunk_ids"))?;
    if head.stype != "numpy.ndarray" {
        return Err(Error::invalid(what, &head.stype, "stype numpy.ndarray"));
    }
    let mut npy = Vec::new();
    for &index in &head.arraychunk_ids {
        let id = array.children.get(index).ok_or_else(|| {
            Error::invalid(
                what,
                format!("chunk index {index}"),
                format!("an index below its {} children", array.children.len()),
            )
        })?;
        let object = chunk(id).ok_or_else(|| {
            Error::invalid(
                what,
                format!("chunk {}", short(id)),
                "a chunk that was received",
            )
        })?;
        if object.class != Class::ArrayChunk {
            return Err(Error::invalid(
                what,
                object.class.name(),
                "ArrayChunk children",
            ));
        }
        npy.extend_from_slice(&object.body);
    }
    Ok((head, npy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Flower's own objects for an ArrayRecord {"w": float32 [1, 2, 3]} (flwr 1.42.0).
    const CHUNK_ID: &str = "1c0de163ebbba9b7e6c78ba9bb113e8b94ff01a03cf67de3321ae49256aa968a";
    const ARRAY_ID: &str = "9212d8007fc7e1c8cb3f4014662a36c18bbdfb789f431008a376ef6de7b9789a";
    const RECORD_ID: &str = "86c6ded8f4c0535bf95c47fc376d8681312e31a97dcb4f4715462bc7226d14da";

    fn npy_123() -> Vec<u8> {
        super::super::npy::NpyArray::new(
            vec![3],
            super::super::npy::Values::F32(vec![1.0, 2.0, 3.0]),
        )
        .unwrap()
        .to_bytes()
    }

    #[test]
    fn an_array_record_gets_the_ids_flower_computes() {
        let objects = deflate_array("float32", &[3], &npy_123(), MAX_CHUNK);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].id(), CHUNK_ID);
        assert_eq!(objects[1].id(), ARRAY_ID);
        let record = Object::new(
            Class::ArrayRecord,
            vec![ARRAY_ID.into()],
            names_body(&[("w".into(), ARRAY_ID.into())]),
        );
        assert_eq!(record.id(), RECORD_ID);
        // Read back through the checks.
        let store: HashMap<String, Object> = objects
            .iter()
            .chain([&record])
            .map(|o| (o.id(), Object::decode(&o.id(), &o.encode()).unwrap()))
            .collect();
        let names = parse_names(&store[RECORD_ID]).unwrap();
        assert_eq!(names, vec![("w".to_string(), ARRAY_ID.to_string())]);
        let (head, npy) = inflate_array(&store[ARRAY_ID], &|id| store.get(id)).unwrap();
        assert_eq!(
            (head.dtype.as_str(), head.shape.as_slice()),
            ("float32", &[3usize][..])
        );
        assert_eq!(npy, npy_123());
    }

    #[test]
    fn chunks_repeat_once_and_reassemble_in_order() {
        // Flower's "chunked" case: zeros(64, f32) in 128-byte chunks → [header, z, z].
        let npy = super::super::npy::NpyArray::new(
            vec![64],
            super::super::npy::Values::F32(vec![0.0; 64]),
        )
        .unwrap()
        .to_bytes();
        let objects = deflate_array("float32", &[64], &npy, 128);
        let array = objects.last().unwrap();
        assert_eq!(array.children.len(), 2);
        let head: ArrayHead = serde_json::from_slice(&array.body).unwrap();
        assert_eq!(head.arraychunk_ids, vec![0, 1, 1]);
        let store: HashMap<String, &Object> = objects.iter().map(|o| (o.id(), o)).collect();
        let (_, back) = inflate_array(array, &|id| store.get(id).copied()).unwrap();
        assert_eq!(back, npy);
    }

    #[test]
    fn objects_whose_bytes_do_not_match_their_id_or_head_are_refused() {
        let chunk = Object::new(Class::ArrayChunk, Vec::new(), b"abc".to_vec());
        let (id, bytes) = (chunk.id(), chunk.encode());
        assert_eq!(Object::decode(&id, &bytes).unwrap(), chunk);
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let cases: Vec<(String, Vec<u8>, &str)> = vec![
            (id.clone(), flipped, "hash"),
            (
                object_id(b"Nope  3\0abc"),
                b"Nope  3\0abc".to_vec(),
                "class",
            ),
            (
                object_id(b"ArrayChunk  4\0abc"),
                b"ArrayChunk  4\0abc".to_vec(),
                "length",
            ),
            (
                object_id(b"ArrayChunk 3\0abc"),
                b"ArrayChunk 3\0abc".to_vec(),
                "three",
            ),
            (
                object_id(b"Array xyz 2\0{}"),
                b"Array xyz 2\0{}".to_vec(),
                "hex",
            ),
            (
                object_id(b"ArrayChunk  3abc"),
                b"ArrayChunk  3abc".to_vec(),
                "0x00",
            ),
        ];
        for (id, bytes, why) in cases {
            let error = Object::decode(&id, &bytes).unwrap_err().to_string();
            assert!(error.contains("Flower object"), "{why}: {error}");
        }
        // A record naming an id that is not its child, and an array pointing past its chunks.
        let record = Object::new(
            Class::ArrayRecord,
            vec![ARRAY_ID.into()],
            names_body(&[("w".into(), CHUNK_ID.into())]),
        );
        assert!(parse_names(&record).is_err());
        let array = Object::new(
            Class::Array,
            vec![CHUNK_ID.into()],
            ArrayHead {
                dtype: "float32".into(),
                shape: vec![3],
                stype: "numpy.ndarray".into(),
                arraychunk_ids: vec![0, 1],
            }
            .body(),
        );
        assert!(inflate_array(&array, &|_| None).is_err());
    }

    #[test]
    fn the_decoder_survives_random_and_truncated_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
        let objects = deflate_array("float32", &[3], &npy_123(), MAX_CHUNK);
        let array = objects.last().unwrap().encode();
        for cut in 0..array.len() {
            let _ = Object::decode(&object_id(&array[..cut]), &array[..cut]);
        }
        for _ in 0..3000 {
            let mut bytes = array.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            // Self-consistent ids, so the parsers behind the hash check are reached.
            if let Ok(object) = Object::decode(&object_id(&bytes), &bytes) {
                let _ = parse_names(&object);
                let _ = inflate_array(&object, &|_| None);
            }
        }
    }

    #[test]
    fn json_strings_are_escaped_as_python_escapes_them() {
        assert_eq!(python_json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(python_json_string("é𝄞"), r#""\u00e9\ud834\udd1e""#);
        assert_eq!(
            String::from_utf8(names_body(&[
                ("x".into(), "y".into()),
                ("z".into(), "w".into())
            ]))
            .unwrap(),
            r#"{"x": "y", "z": "w"}"#
        );
    }
}
