//! Whole Flower messages as object trees: a `Message` (its metadata, protobuf) over a
//! `RecordDict` of named records: arrays (`ArrayRecord`), configuration and metrics
//! (protobuf `ConfigRecord`, `MetricRecord`).
//!
//! [`deflate`] builds a message's objects (children before parents, each once) and its
//! id, as flwr 1.42 does; [`inflate`] reads one back from objects received by id, checking
//! that every object named is there and of the class its parent says.

use std::collections::{HashMap, HashSet};

use prost::Message as _;

use super::npy::NpyArray;
use super::objects::{
    Class, MAX_CHUNK, Object, deflate_array, inflate_array, names_body, parse_names,
};
use super::proto;
use crate::error::{Error, Result};

/// One record of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Named arrays, in order (a model's parameters).
    Arrays(Vec<(String, NpyArray)>),
    /// Configuration values.
    Config(proto::ConfigRecord),
    /// Metrics.
    Metrics(proto::MetricRecord),
}

/// A message's content: named records, in order.
pub type Content = Vec<(String, Record)>;

/// A message as objects.
#[derive(Debug, Clone)]
pub struct Deflated {
    /// The message's id (its `Message` object's id), which is also its metadata's
    /// `message_id` on the wire.
    pub message_id: String,
    /// Every object once, children before parents (the order objects are pushed in).
    pub objects: Vec<Object>,
    /// The tree of ids (PushMessages' `message_object_trees`).
    pub tree: proto::ObjectTree,
}

/// The objects of a message with `metadata` (its `message_id` is ignored: it is the id
/// computed here) and `content`, arrays in chunks of at most `chunk` bytes.
pub fn deflate(metadata: &proto::Metadata, content: &Content, chunk: usize) -> Deflated {
    // Each object once, found by its id (hashed once, not per comparison).
    let mut objects: Vec<Object> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut push = |object: Object, objects: &mut Vec<Object>| -> (String, proto::ObjectTree) {
        let id = object.id();
        if seen.insert(id.clone()) {
            objects.push(object);
        }
        (
            id.clone(),
            proto::ObjectTree {
                object_id: id,
                children: Vec::new(),
            },
        )
    };
    let mut record_trees = Vec::new();
    let mut names = Vec::new();
    for (name, record) in content {
        let (id, tree) = match record {
            Record::Arrays(arrays) => {
                let mut array_trees: Vec<proto::ObjectTree> = Vec::new();
                let mut array_names = Vec::new();
                for (array_name, array) in arrays {
                    let mut parts = deflate_array(
                        array.values.dtype().name(),
                        &array.shape,
                        &array.to_bytes(),
                        chunk.min(MAX_CHUNK),
                    );
                    let head = parts.pop().expect("deflate_array ends with the Array");
                    let chunk_trees: Vec<proto::ObjectTree> =
                        parts.into_iter().map(|c| push(c, &mut objects).1).collect();
                    let (id, mut tree) = push(head, &mut objects);
                    tree.children = chunk_trees;
                    if !array_trees.iter().any(|t| t.object_id == id) {
                        array_trees.push(tree);
                    }
                    array_names.push((array_name.clone(), id));
                }
                let record = Object::new(
                    Class::ArrayRecord,
                    array_names.iter().map(|(_, id)| id.clone()).collect(),
                    names_body(&array_names),
                );
                let (id, mut tree) = push(record, &mut objects);
                tree.children = array_trees;
                (id, tree)
            }
            Record::Config(config) => push(
                Object::new(Class::ConfigRecord, Vec::new(), config.encode_to_vec()),
                &mut objects,
            ),
            Record::Metrics(metrics) => push(
                Object::new(Class::MetricRecord, Vec::new(), metrics.encode_to_vec()),
                &mut objects,
            ),
        };
        if !record_trees
            .iter()
            .any(|t: &proto::ObjectTree| t.object_id == id)
        {
            record_trees.push(tree);
        }
        names.push((name.clone(), id));
    }
    let dict = Object::new(
        Class::RecordDict,
        names.iter().map(|(_, id)| id.clone()).collect(),
        names_body(&names),
    );
    let (dict_id, mut dict_tree) = push(dict, &mut objects);
    dict_tree.children = record_trees;
    let body = proto::Message {
        metadata: Some(proto::Metadata {
            message_id: String::new(),
            ..metadata.clone()
        }),
        content: None,
        error: None,
    }
    .encode_to_vec();
    let (message_id, mut tree) = push(
        Object::new(Class::Message, vec![dict_id], body),
        &mut objects,
    );
    tree.children = vec![dict_tree];
    Deflated {
        message_id,
        objects,
        tree,
    }
}

/// The objects of a reply with `metadata` that carries an error instead of content (one
/// `Message` object, no children).
pub fn deflate_error(metadata: &proto::Metadata, code: i64, reason: &str) -> Deflated {
    let body = proto::Message {
        metadata: Some(proto::Metadata {
            message_id: String::new(),
            ..metadata.clone()
        }),
        content: None,
        error: Some(proto::Error {
            code,
            reason: reason.to_string(),
        }),
    }
    .encode_to_vec();
    let object = Object::new(Class::Message, Vec::new(), body);
    let message_id = object.id();
    Deflated {
        tree: proto::ObjectTree {
            object_id: message_id.clone(),
            children: Vec::new(),
        },
        message_id,
        objects: vec![object],
    }
}

/// A message's content as the protobuf `RecordDict` (the form `flwr.common.serde` reads:
/// arrays with their `.npy` bytes inline), for the ServerApp's pipe to
/// `dptrain fl server-step`.
pub fn content_to_proto(content: &[(String, Record)]) -> proto::RecordDict {
    use proto::record_dict::item::Value;
    proto::RecordDict {
        items: content
            .iter()
            .map(|(name, record)| proto::record_dict::Item {
                key: name.clone(),
                value: Some(match record {
                    Record::Arrays(arrays) => Value::ArrayRecord(proto::ArrayRecord {
                        items: arrays
                            .iter()
                            .map(|(name, array)| proto::array_record::Item {
                                key: name.clone(),
                                value: Some(proto::Array {
                                    dtype: array.values.dtype().name().to_string(),
                                    shape: array.shape.iter().map(|&n| n as i32).collect(),
                                    stype: "numpy.ndarray".to_string(),
                                    data: array.to_bytes(),
                                }),
                            })
                            .collect(),
                    }),
                    Record::Config(config) => Value::ConfigRecord(config.clone()),
                    Record::Metrics(metrics) => Value::MetricRecord(metrics.clone()),
                }),
            })
            .collect(),
    }
}

/// The content a protobuf `RecordDict` holds, each array's `.npy` bytes checked against
/// the dtype and shape it states.
pub fn content_from_proto(dict: proto::RecordDict) -> Result<Content> {
    use proto::record_dict::item::Value;
    let mut content = Vec::new();
    for item in dict.items {
        let record = match item.value {
            Some(Value::ArrayRecord(arrays)) => {
                let mut out = Vec::new();
                for array in arrays.items {
                    let what = format!("array {:?} of record {:?}", array.key, item.key);
                    let value = array
                        .value
                        .ok_or_else(|| Error::invalid(what.clone(), "no value", "an Array"))?;
                    let values = NpyArray::from_bytes(&value.data)?;
                    let shape: Vec<i32> = values.shape.iter().map(|&n| n as i32).collect();
                    if shape != value.shape || values.values.dtype().name() != value.dtype {
                        return Err(Error::invalid(
                            what,
                            format!(
                                "{} {:?} in its .npy bytes",
                                values.values.dtype().name(),
                                values.shape
                            ),
                            format!("the {} {:?} it states", value.dtype, value.shape),
                        ));
                    }
                    out.push((array.key, values));
                }
                Record::Arrays(out)
            }
            Some(Value::ConfigRecord(config)) => Record::Config(config),
            Some(Value::MetricRecord(metrics)) => Record::Metrics(metrics),
            None => {
                return Err(Error::invalid(
                    format!("record {:?}", item.key),
                    "no value",
                    "an ArrayRecord, ConfigRecord or MetricRecord",
                ));
            }
        };
        content.push((item.key, record));
    }
    Ok(content)
}

/// The metadata (with `message_id` set to `message_id`) and content of the message
/// `message_id`, from `objects` received by id (each already checked against its bytes
/// by [`Object::decode`]).
pub fn inflate(
    message_id: &str,
    objects: &HashMap<String, Object>,
) -> Result<(proto::Metadata, Content)> {
    let get = |id: &str, class: Class| -> Result<&Object> {
        let object = objects.get(id).ok_or_else(|| {
            Error::invalid(
                "Flower message",
                format!("object {} missing", &id[..id.len().min(12)]),
                "every object of the message's tree",
            )
        })?;
        if object.class != class {
            return Err(Error::invalid(
                "Flower message",
                format!("a {} where a {} belongs", object.class.name(), class.name()),
                "the classes the tree's parents name",
            ));
        }
        Ok(object)
    };
    let message = get(message_id, Class::Message)?;
    let body = proto::Message::decode(message.body.as_slice())
        .map_err(|e| Error::invalid("Flower Message body", e, "a protobuf flwr.proto.Message"))?;
    let mut metadata = body.metadata.ok_or_else(|| {
        Error::invalid(
            "Flower Message body",
            "no metadata",
            "a message with metadata",
        )
    })?;
    metadata.message_id = message_id.to_string();
    if let Some(error) = body.error {
        return Err(Error::Usage(format!(
            "the Flower message {} carries error {}: {}",
            &message_id[..12.min(message_id.len())],
            error.code,
            error.reason
        )));
    }
    let [dict_id] = message.children.as_slice() else {
        return Err(Error::invalid(
            "Flower Message",
            format!("{} children", message.children.len()),
            "one RecordDict",
        ));
    };
    let dict = get(dict_id, Class::RecordDict)?;
    let mut content = Vec::new();
    for (name, id) in parse_names(dict)? {
        let object = objects
            .get(&id)
            .ok_or_else(|| Error::invalid("Flower RecordDict", &name, "records that arrived"))?;
        let record = match object.class {
            Class::ArrayRecord => {
                let mut arrays = Vec::new();
                for (array_name, array_id) in parse_names(object)? {
                    let array = get(&array_id, Class::Array)?;
                    let (head, npy) = inflate_array(array, &|id| objects.get(id))?;
                    let values = NpyArray::from_bytes(&npy)?;
                    if values.shape != head.shape || values.values.dtype().name() != head.dtype {
                        return Err(Error::invalid(
                            format!("Flower Array {array_name:?}"),
                            format!(
                                "{} {:?} in its .npy bytes",
                                values.values.dtype().name(),
                                values.shape
                            ),
                            format!("the {} {:?} its head states", head.dtype, head.shape),
                        ));
                    }
                    arrays.push((array_name, values));
                }
                Record::Arrays(arrays)
            }
            Class::ConfigRecord => {
                Record::Config(proto::ConfigRecord::decode(object.body.as_slice()).map_err(
                    |e| Error::invalid("Flower ConfigRecord", e, "a protobuf ConfigRecord"),
                )?)
            }
            Class::MetricRecord => {
                Record::Metrics(proto::MetricRecord::decode(object.body.as_slice()).map_err(
                    |e| Error::invalid("Flower MetricRecord", e, "a protobuf MetricRecord"),
                )?)
            }
            other => {
                return Err(Error::invalid(
                    format!("Flower record {name:?}"),
                    other.name(),
                    "ArrayRecord, ConfigRecord or MetricRecord",
                ));
            }
        };
        content.push((name, record));
    }
    Ok((metadata, content))
}

/// A configuration record of signed integers (e.g. `{"round": 1}`).
pub fn config_ints(items: &[(&str, i64)]) -> proto::ConfigRecord {
    proto::ConfigRecord {
        items: items
            .iter()
            .map(|(key, value)| proto::config_record::Item {
                key: key.to_string(),
                value: Some(proto::ConfigRecordValue {
                    value: Some(proto::config_record_value::Value::Sint64(*value)),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federated::flower::npy::Values;

    fn train_metadata() -> proto::Metadata {
        proto::Metadata {
            run_id: 1234,
            message_id: String::new(),
            src_node_id: 1,
            dst_node_id: 5678,
            reply_to_message_id: String::new(),
            group_id: "1".into(),
            ttl: 43200.0,
            message_type: "train".into(),
            created_at: 1_767_225_600.0,
            src_task_id: Some(42),
            dst_task_id: None,
        }
    }

    fn train_content() -> Content {
        vec![
            (
                "arrays".into(),
                Record::Arrays(vec![(
                    "w".into(),
                    NpyArray::new(vec![3], Values::F32(vec![1.0, 2.0, 3.0])).unwrap(),
                )]),
            ),
            (
                "config".into(),
                Record::Config(config_ints(&[("round", 1)])),
            ),
        ]
    }

    /// flwr 1.42.0's own ids for this message (/work/notes/flwr-object-tree-example.json,
    /// case "train").
    #[test]
    fn a_message_deflates_to_flowers_ids_and_inflates_back() {
        let deflated = deflate(&train_metadata(), &train_content(), MAX_CHUNK);
        assert_eq!(
            deflated.message_id,
            "2bc05123c9c40205b9afbc5111afbfe18a6ad0692c20d1a450d4ce0e78d4db46"
        );
        let ids: Vec<String> = deflated
            .objects
            .iter()
            .map(|o| o.id()[..8].to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "1c0de163", "9212d800", "86c6ded8", "89ac2cc3", "a52b6f28", "2bc05123"
            ]
        );
        assert_eq!(deflated.tree.object_id, deflated.message_id);
        let store: HashMap<String, Object> = deflated
            .objects
            .iter()
            .map(|o| (o.id(), Object::decode(&o.id(), &o.encode()).unwrap()))
            .collect();
        let (metadata, content) = inflate(&deflated.message_id, &store).unwrap();
        assert_eq!(metadata.message_id, deflated.message_id);
        assert_eq!(metadata.src_task_id, Some(42));
        assert_eq!(content, train_content());
        // A missing object is named, not guessed.
        let mut partial = store.clone();
        partial.retain(|_, o| o.class != Class::ArrayChunk);
        let error = inflate(&deflated.message_id, &partial)
            .unwrap_err()
            .to_string();
        assert!(error.contains("chunk"), "{error}");
    }

    #[test]
    fn equal_arrays_and_chunks_are_stored_once() {
        // Flower's "chunked" case: 128-byte chunks, two equal arrays under two names.
        let zeros = NpyArray::new(vec![64], Values::F32(vec![0.0; 64])).unwrap();
        let content: Content = vec![(
            "arrays".into(),
            Record::Arrays(vec![("z".into(), zeros.clone()), ("z2".into(), zeros)]),
        )];
        let metadata = proto::Metadata {
            run_id: 1234,
            src_node_id: 1,
            dst_node_id: 5678,
            ttl: 60.0,
            message_type: "query".into(),
            created_at: 1_767_225_600.0,
            ..Default::default()
        };
        let deflated = deflate(&metadata, &content, 128);
        assert_eq!(
            deflated.message_id,
            "f168c03ce9e29673622b885cae7ef8f66c6137b55005787de225660aa60091c3"
        );
        assert_eq!(deflated.objects.len(), 6);
        let store: HashMap<String, Object> = deflated
            .objects
            .iter()
            .map(|o| (o.id(), o.clone()))
            .collect();
        assert_eq!(inflate(&deflated.message_id, &store).unwrap().1, content);
    }
}
