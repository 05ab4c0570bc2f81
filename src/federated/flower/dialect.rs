//! dptrain's messages on Flower's records: what `dptrain fl server-step` sends the nodes
//! through the ServerApp, and what `dptrain fl node` answers.
//!
//! | message type | to the node | the node's reply |
//! | --- | --- | --- |
//! | `query.dptrain_hello` | `config`: `{}` | `config`: `client` (its index), `config_sha256` |
//! | `train` (plain) | `arrays`: the global model; `config`: `round`, `clip_norm` | `arrays`: the clipped update; `config`: `within_clip` |
//! | `train.keys` | `arrays`, `config`: `round`, `clip_norm`, `id`, `clients`, `rotation_seed`, `graph_seed` | `config`: `payload` (its SecAgg+ keys) |
//! | `train.shares`, `train.masked_input`, `train.unmask` | `config`: `round`, `payload` | `config`: `payload` |
//! | `query.dptrain_finish` | `config`: `{}` | `config`: `{}` |
//!
//! Arrays are named by position (`"0"`, `"1"`, ...) in the model's parameter order, with the
//! parameters' shapes and dtype; `payload`s are `crate::secagg::messages` encodings.
//! A message of another type, or one missing a key, is answered with an error message.

use candle_core::DType;

use super::npy::{NpyArray, Values};
use super::proto;
use super::proto::config_record_value::Value;
use super::records::{Content, Record};
use crate::error::{Error, Result};
use crate::federated::secure::Stage;
use crate::train::Sums;

/// The server asks who the node is.
pub const HELLO: &str = "query.dptrain_hello";
/// The server's last message of a run.
pub const FINISH: &str = "query.dptrain_finish";
/// A plain round's training.
pub const TRAIN: &str = "train";

/// The message type of a secure round's `stage`.
pub fn stage_type(stage: Stage) -> String {
    format!("train.{}", stage.name())
}

/// The secure stage a message type names (None: not a stage).
pub fn stage_of(message_type: &str) -> Option<Stage> {
    [
        Stage::Keys,
        Stage::Shares,
        Stage::MaskedInput,
        Stage::Unmask,
    ]
    .into_iter()
    .find(|stage| message_type == stage_type(*stage))
}

/// A configuration value.
#[derive(Debug, Clone)]
pub enum ConfigValue {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (a node id).
    Uint(u64),
    /// A float.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// A `ConfigRecord` of `items`, in order.
pub fn config(items: Vec<(&str, ConfigValue)>) -> proto::ConfigRecord {
    proto::ConfigRecord {
        items: items
            .into_iter()
            .map(|(key, value)| proto::config_record::Item {
                key: key.to_string(),
                value: Some(proto::ConfigRecordValue {
                    value: Some(match value {
                        ConfigValue::Int(v) => Value::Sint64(v),
                        ConfigValue::Uint(v) => Value::Uint64(v),
                        ConfigValue::Float(v) => Value::Double(v),
                        ConfigValue::Bool(v) => Value::Bool(v),
                        ConfigValue::Text(v) => Value::String(v),
                        ConfigValue::Bytes(v) => Value::Bytes(v),
                    }),
                }),
            })
            .collect(),
    }
}

/// A message's content, read with errors that name the message and the key.
pub struct Reader<'a> {
    what: &'a str,
    content: &'a Content,
}

impl<'a> Reader<'a> {
    /// The content of a message described as `what` (its type, say).
    pub fn new(what: &'a str, content: &'a Content) -> Self {
        Reader { what, content }
    }

    fn record(&self, name: &str) -> Option<&'a Record> {
        self.content
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, record)| record)
    }

    /// The named arrays of record `arrays`.
    pub fn arrays(&self) -> Result<&'a [(String, NpyArray)]> {
        match self.record("arrays") {
            Some(Record::Arrays(arrays)) => Ok(arrays),
            _ => Err(Error::invalid(
                format!("{}: record \"arrays\"", self.what),
                "missing",
                "an ArrayRecord of the model's parameters",
            )),
        }
    }

    fn value(&self, key: &str) -> Result<&'a Value> {
        let Some(Record::Config(config)) = self.record("config") else {
            return Err(Error::invalid(
                format!("{}: record \"config\"", self.what),
                "missing",
                "a ConfigRecord",
            ));
        };
        config
            .items
            .iter()
            .find(|item| item.key == key)
            .and_then(|item| item.value.as_ref()?.value.as_ref())
            .ok_or_else(|| {
                Error::invalid(
                    format!("{}: config key {key:?}", self.what),
                    "missing",
                    "a value",
                )
            })
    }

    fn wrong(&self, key: &str, expected: &str) -> Error {
        Error::invalid(
            format!("{}: config key {key:?}", self.what),
            "a value of another type",
            expected,
        )
    }

    /// Integer `key` of record `config`.
    pub fn int(&self, key: &str) -> Result<i64> {
        match self.value(key)? {
            Value::Sint64(v) => Ok(*v),
            _ => Err(self.wrong(key, "an integer")),
        }
    }

    /// Non-negative integer `key` of record `config` (Python writes one above 2^63 − 1
    /// as uint64, others as sint64).
    pub fn count(&self, key: &str) -> Result<u64> {
        match self.value(key)? {
            Value::Uint64(v) => Ok(*v),
            Value::Sint64(v) => {
                u64::try_from(*v).map_err(|_| self.wrong(key, "a non-negative integer"))
            }
            _ => Err(self.wrong(key, "a non-negative integer")),
        }
    }

    /// Float `key` of record `config`.
    pub fn float(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            Value::Double(v) => Ok(*v),
            _ => Err(self.wrong(key, "a float")),
        }
    }

    /// Flag `key` of record `config`.
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(v) => Ok(*v),
            _ => Err(self.wrong(key, "true or false")),
        }
    }

    /// Text `key` of record `config`.
    pub fn text(&self, key: &str) -> Result<&'a str> {
        match self.value(key)? {
            Value::String(v) => Ok(v),
            _ => Err(self.wrong(key, "text")),
        }
    }

    /// Bytes `key` of record `config`.
    pub fn bytes(&self, key: &str) -> Result<&'a [u8]> {
        match self.value(key)? {
            Value::Bytes(v) => Ok(v),
            _ => Err(self.wrong(key, "bytes")),
        }
    }

    /// A 32-byte seed `key` of record `config`.
    pub fn seed(&self, key: &str) -> Result<[u8; 32]> {
        self.bytes(key)?
            .try_into()
            .map_err(|_| self.wrong(key, "32 bytes"))
    }
}

/// The model's parameters (or an update) as the `arrays` record: one array per parameter,
/// named by position, of the parameters' `shapes`.
pub fn params_record(values: &Sums, shapes: &[Vec<usize>]) -> Result<Record> {
    let arrays = match values {
        Sums::F32(v) => v.iter().map(|p| Values::F32(p.clone())).collect::<Vec<_>>(),
        Sums::F64(v) => v.iter().map(|p| Values::F64(p.clone())).collect(),
    };
    if arrays.len() != shapes.len() {
        return Err(Error::Tensor(format!(
            "{} parameter tensors for {} shapes",
            arrays.len(),
            shapes.len()
        )));
    }
    Ok(Record::Arrays(
        arrays
            .into_iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (values, shape))| Ok((i.to_string(), NpyArray::new(shape.clone(), values)?)))
            .collect::<Result<_>>()?,
    ))
}

/// The parameters in `arrays`, checked against the model's `shapes` and `dtype`: each
/// array named by its position, of its parameter's shape and dtype.
pub fn params_from(
    arrays: &[(String, NpyArray)],
    shapes: &[Vec<usize>],
    dtype: DType,
    what: &str,
) -> Result<Sums> {
    if arrays.len() != shapes.len() {
        return Err(Error::invalid(
            format!("{what}: arrays"),
            arrays.len(),
            format!("{} arrays, one per parameter of the model", shapes.len()),
        ));
    }
    let mut f32s = Vec::new();
    let mut f64s = Vec::new();
    for (i, ((name, array), shape)) in arrays.iter().zip(shapes).enumerate() {
        let label = format!("{what}: array {name:?}");
        if *name != i.to_string() {
            return Err(Error::invalid(
                label,
                name,
                format!("array \"{i}\" (parameter {i})"),
            ));
        }
        if array.shape != *shape {
            return Err(Error::invalid(
                label,
                format!("shape {:?}", array.shape),
                format!("shape {shape:?}, parameter {i}'s"),
            ));
        }
        match (&array.values, dtype) {
            (Values::F32(v), DType::F32) => f32s.push(v.clone()),
            (Values::F64(v), DType::F64) => f64s.push(v.clone()),
            (values, _) => {
                return Err(Error::invalid(
                    label,
                    values.dtype().name(),
                    format!("the model's {dtype:?}"),
                ));
            }
        }
    }
    Ok(match dtype {
        DType::F64 => Sums::F64(f64s),
        _ => Sums::F32(f32s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_survive_the_records_and_a_wrong_shape_or_dtype_is_named() {
        let shapes = vec![vec![2, 3], vec![3]];
        let values = Sums::F32(vec![
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![-1.0, 0.5, 7.0],
        ]);
        let Record::Arrays(arrays) = params_record(&values, &shapes).unwrap() else {
            panic!("not arrays");
        };
        let back = params_from(&arrays, &shapes, DType::F32, "train").unwrap();
        assert_eq!(back, values);
        let err = params_from(&arrays, &[vec![3, 2], vec![3]], DType::F32, "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("array \"0\"") && err.contains("[3, 2]"),
            "{err}"
        );
        let err = params_from(&arrays, &shapes, DType::F64, "train")
            .unwrap_err()
            .to_string();
        assert!(err.contains("float32"), "{err}");
    }

    #[test]
    fn a_missing_or_mistyped_key_is_named_with_its_message() {
        let content: Content = vec![(
            "config".into(),
            Record::Config(config(vec![("round", ConfigValue::Float(1.0))])),
        )];
        let reader = Reader::new("train.keys", &content);
        let err = reader.int("round").unwrap_err().to_string();
        assert!(
            err.contains("train.keys") && err.contains("\"round\"") && err.contains("integer"),
            "{err}"
        );
        let err = reader.bytes("payload").unwrap_err().to_string();
        assert!(
            err.contains("\"payload\"") && err.contains("missing"),
            "{err}"
        );
        assert!(Reader::new("train", &content).arrays().is_err());
        assert_eq!(stage_of("train.masked_input"), Some(Stage::MaskedInput));
        assert_eq!(stage_of("train"), None);
    }
}
