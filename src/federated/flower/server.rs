//! `dptrain fl server-step`: the server side of a federated run whose clients are Flower
//! nodes. The run is the simulation's own [`crate::federated::ClientLevelRun`] (the same
//! sampler, accountant, server optimizer and run directory); only its transport differs:
//! [`FlowerClients`] turns each exchange with the round's clients into messages that the
//! dptrain ServerApp (Python, `flower/` in the repository) sends through the SuperLink.
//!
//! The ServerApp and this process talk over a pipe ([`Router`]): dptrain writes a command,
//! the ServerApp answers. Each frame is a 4-byte big-endian length and a protobuf
//! `flwr.proto.RecordDict` (Flower's own type, so the ServerApp needs no code of ours):
//!
//! | command (`command` record: `kind`) | other records | answer |
//! | --- | --- | --- |
//! | `nodes` | none | `nodes`: `node_ids` (the online nodes) |
//! | `exchange` (`message_type`, `timeout`) | `to.<i>`: `node_id`, `content` (a `RecordDict`'s bytes) | `from.<i>`: `node_id` and `content`, or `error` |
//! | `done` | none | none: the ServerApp ends the run |
//!
//! Every privacy decision stays here: which clients join a round, C, the noise, when a
//! secure round aborts, what the ledger books.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use candle_core::DType;
use prost::Message as _;

use super::dialect::{self, ConfigValue, Reader};
use super::proto;
use super::proto::config_record_value::Value;
use super::records::{Content, Record, content_from_proto, content_to_proto};
use crate::error::{Error, Result};
use crate::federated::round::{ClientReply, RoundRequest, Transport};
use crate::federated::secure::{HeSetup, SecureSetup, SecureTransport, Stage};
use crate::secagg::messages::{NeighbourKeys, SharesForHolder, UnmaskRequest};
use crate::secagg::server::Inbox;

/// The longest frame either side accepts (a model of 256 M float32 parameters).
pub const MAX_FRAME: usize = 1 << 30;

/// A reply from one node: its content, or why there is none.
pub type NodeReply = (u64, std::result::Result<Content, String>);

/// How the server reaches the nodes (through the ServerApp).
pub trait Router {
    /// The nodes online now.
    fn nodes(&mut self) -> Result<Vec<u64>>;
    /// Sends each `(node, content)` as a message of `message_type` and returns the replies
    /// that came within `timeout` (a node that does not answer is absent).
    fn exchange(
        &mut self,
        message_type: &str,
        messages: Vec<(u64, Content)>,
        timeout: Duration,
    ) -> Result<Vec<NodeReply>>;
    /// The run is over.
    fn done(&mut self) -> Result<()>;
}

/// A [`Router`] over a pipe: commands written to `output`, answers read from `input`.
pub struct PipeRouter<R, W> {
    input: R,
    output: W,
}

impl<R: Read, W: Write> PipeRouter<R, W> {
    /// A router writing to `output` and reading from `input` (the process's stdout and
    /// stdin under the ServerApp).
    pub fn new(input: R, output: W) -> Self {
        PipeRouter { input, output }
    }

    fn send(&mut self, dict: &proto::RecordDict) -> Result<()> {
        write_frame(&mut self.output, &dict.encode_to_vec())
    }

    fn answer(&mut self) -> Result<proto::RecordDict> {
        let frame = read_frame(&mut self.input)?
            .ok_or_else(|| Error::Usage("the ServerApp closed the pipe before answering".into()))?;
        proto::RecordDict::decode(frame.as_slice()).map_err(|e| {
            Error::invalid(
                "the ServerApp's answer",
                e,
                "a protobuf flwr.proto.RecordDict",
            )
        })
    }
}

/// Writes one frame: its length (4 bytes, big-endian), then `bytes`.
pub fn write_frame(output: &mut impl Write, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: "the ServerApp's pipe".into(),
        source,
    };
    let length = u32::try_from(bytes.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| Error::invalid("pipe frame", bytes.len(), "at most 1 GiB"))?;
    output.write_all(&length.to_be_bytes()).map_err(io)?;
    output.write_all(bytes).map_err(io)?;
    output.flush().map_err(io)
}

/// Reads one frame (None at the end of the stream, before a frame starts).
pub fn read_frame(input: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let io = |source| Error::Io {
        path: "the ServerApp's pipe".into(),
        source,
    };
    let mut length = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut length[got..]).map_err(io)? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(Error::invalid(
                    "pipe frame",
                    "a truncated length",
                    "4 bytes of length",
                ));
            }
            n => got += n,
        }
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(Error::invalid("pipe frame", length, "at most 1 GiB"));
    }
    // Read what arrives rather than allocating the announced length up front: a corrupt
    // length costs an error, not a gigabyte.
    let mut bytes = Vec::new();
    input
        .take(length as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() != length {
        return Err(Error::invalid(
            "pipe frame",
            format!("{} bytes", bytes.len()),
            format!("the {length} bytes its length announces"),
        ));
    }
    Ok(Some(bytes))
}

fn command(kind: &str, extra: Vec<(&str, ConfigValue)>) -> proto::RecordDict {
    let mut items = vec![("kind", ConfigValue::Text(kind.into()))];
    items.extend(extra);
    content_to_proto(&[("command".into(), Record::Config(dialect::config(items)))])
}

impl<R: Read, W: Write> Router for PipeRouter<R, W> {
    fn nodes(&mut self) -> Result<Vec<u64>> {
        self.send(&command("nodes", vec![]))?;
        let answer = content_from_proto(self.answer()?)?;
        let Some((_, Record::Config(config))) = answer.iter().find(|(name, _)| name == "nodes")
        else {
            return Err(Error::invalid(
                "the ServerApp's answer to nodes",
                "no nodes record",
                "a ConfigRecord nodes",
            ));
        };
        match config
            .items
            .iter()
            .find(|item| item.key == "node_ids")
            .and_then(|item| item.value.as_ref()?.value.as_ref())
        {
            Some(Value::UintList(list)) => Ok(list.vals.clone()),
            Some(Value::SintList(list)) => Ok(list.vals.iter().map(|&v| v as u64).collect()),
            _ => Err(Error::invalid(
                "the ServerApp's answer to nodes",
                "no node_ids",
                "a list of node ids",
            )),
        }
    }

    fn exchange(
        &mut self,
        message_type: &str,
        messages: Vec<(u64, Content)>,
        timeout: Duration,
    ) -> Result<Vec<NodeReply>> {
        let mut dict = command(
            "exchange",
            vec![
                ("message_type", ConfigValue::Text(message_type.into())),
                ("timeout", ConfigValue::Float(timeout.as_secs_f64())),
            ],
        );
        for (i, (node, content)) in messages.into_iter().enumerate() {
            let to = dialect::config(vec![
                ("node_id", ConfigValue::Uint(node)),
                (
                    "content",
                    ConfigValue::Bytes(content_to_proto(&content).encode_to_vec()),
                ),
            ]);
            dict.items.push(proto::record_dict::Item {
                key: format!("to.{i}"),
                value: Some(proto::record_dict::item::Value::ConfigRecord(to)),
            });
        }
        self.send(&dict)?;
        let answer = content_from_proto(self.answer()?)?;
        let mut replies = Vec::new();
        for (name, record) in &answer {
            if !name.starts_with("from.") {
                continue;
            }
            let single = vec![("config".to_string(), record.clone())];
            let reader = Reader::new("the ServerApp's reply", &single);
            let node = reader.count("node_id")?;
            let reply = match reader.bytes("content") {
                Ok(bytes) => {
                    let dict = proto::RecordDict::decode(bytes).map_err(|e| {
                        Error::invalid("a node's reply", e, "a protobuf flwr.proto.RecordDict")
                    })?;
                    content_from_proto(dict).map_err(|e| e.to_string())
                }
                Err(_) => Err(reader.text("error")?.to_string()),
            };
            replies.push((node, reply));
        }
        Ok(replies)
    }

    fn done(&mut self) -> Result<()> {
        self.send(&command("done", vec![]))
    }
}

/// The clients of a federated run as Flower nodes: client i is the node that said it is
/// (`query.dptrain_hello`), with the same config.
pub struct FlowerClients<'r> {
    router: &'r mut dyn Router,
    nodes: Vec<Option<u64>>,
    shapes: Vec<Vec<usize>>,
    timeout: Duration,
    /// The secure round under way: its number and its clients (by SecAgg+ id).
    round: (u64, Vec<usize>),
}

impl<'r> FlowerClients<'r> {
    /// Finds the nodes of a federation of `population` clients whose config hashes to
    /// `config_sha256`, waiting up to `wait` for every client to be online; `shapes` are
    /// the model's parameters' shapes; each exchange waits up to `timeout` for replies.
    /// Clients still missing after `wait` are absent from every round (they count as
    /// dropped whenever they are sampled).
    pub fn connect(
        router: &'r mut dyn Router,
        population: usize,
        config_sha256: &str,
        shapes: Vec<Vec<usize>>,
        wait: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let start = Instant::now();
        let mut nodes: Vec<Option<u64>> = vec![None; population];
        loop {
            let asked: Vec<u64> = router
                .nodes()?
                .into_iter()
                .filter(|id| !nodes.contains(&Some(*id)))
                .collect();
            if !asked.is_empty() {
                let hello = asked
                    .iter()
                    .map(|&id| {
                        (
                            id,
                            vec![("config".into(), Record::Config(dialect::config(vec![])))],
                        )
                    })
                    .collect();
                for (node, reply) in router.exchange(dialect::HELLO, hello, timeout)? {
                    let content = match reply {
                        Ok(content) => content,
                        Err(why) => {
                            tracing::warn!("node {node} did not say who it is: {why}");
                            continue;
                        }
                    };
                    let reader = Reader::new(dialect::HELLO, &content);
                    let client = reader.count("client")? as usize;
                    let digest = reader.text("config_sha256")?;
                    if digest != config_sha256 {
                        return Err(Error::Usage(format!(
                            "node {node} (client {client}) runs another config (SHA-256 \
                             {digest}, the server's is {config_sha256}); every node must \
                             run the federation's config"
                        )));
                    }
                    match nodes.get_mut(client) {
                        Some(slot @ None) => *slot = Some(node),
                        Some(Some(other)) => {
                            return Err(Error::Usage(format!(
                                "nodes {other} and {node} both say they are client {client}"
                            )));
                        }
                        None => {
                            return Err(Error::invalid(
                                format!("node {node}'s client"),
                                client,
                                format!("a client of the partition, 0 to {}", population - 1),
                            ));
                        }
                    }
                }
            }
            let missing: Vec<usize> = (0..population).filter(|&c| nodes[c].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            if start.elapsed() > wait {
                tracing::warn!(
                    "clients {missing:?} have no node after {wait:?}; they count as dropped \
                     whenever they are sampled"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        tracing::info!(
            "{} of {population} clients online",
            nodes.iter().flatten().count()
        );
        Ok(FlowerClients {
            router,
            nodes,
            shapes,
            timeout,
            round: (0, Vec::new()),
        })
    }

    /// Ends the run: every node is told, then the ServerApp.
    pub fn finish(self) -> Result<()> {
        let all = self
            .nodes
            .iter()
            .flatten()
            .map(|&id| {
                (
                    id,
                    vec![("config".into(), Record::Config(dialect::config(vec![])))],
                )
            })
            .collect();
        self.router
            .exchange(dialect::FINISH, all, Duration::from_secs(10))?;
        self.router.done()
    }

    /// Sends `contents[i]` to the node of `clients[i]` and returns the replies by position
    /// in `clients`: a client without a node, a silent node or an error reply is absent.
    fn send(
        &mut self,
        message_type: &str,
        clients: &[usize],
        contents: Vec<Content>,
    ) -> BTreeMap<usize, Content> {
        let mut by_node = BTreeMap::new();
        let mut messages = Vec::new();
        for (at, (&client, content)) in clients.iter().zip(contents).enumerate() {
            if let Some(Some(node)) = self.nodes.get(client) {
                by_node.insert(*node, at);
                messages.push((*node, content));
            }
        }
        let replies = match self.router.exchange(message_type, messages, self.timeout) {
            Ok(replies) => replies,
            Err(e) => {
                tracing::error!("{message_type}: {e}");
                return BTreeMap::new();
            }
        };
        let mut out = BTreeMap::new();
        for (node, reply) in replies {
            let Some(&at) = by_node.get(&node) else {
                continue;
            };
            match reply {
                Ok(content) => {
                    out.insert(at, content);
                }
                Err(why) => tracing::info!(
                    "{message_type}: client {} sent an error: {why}",
                    clients[at]
                ),
            }
        }
        out
    }

    fn config_record(items: Vec<(&str, ConfigValue)>) -> (String, Record) {
        ("config".into(), Record::Config(dialect::config(items)))
    }

    fn training_content(
        &self,
        request: &RoundRequest,
        extra: Vec<(&str, ConfigValue)>,
    ) -> Result<Content> {
        let mut items = vec![
            ("round", ConfigValue::Int(request.round as i64)),
            ("clip_norm", ConfigValue::Float(request.clip_norm)),
        ];
        items.extend(extra);
        Ok(vec![
            (
                "arrays".into(),
                dialect::params_record(&request.params, &self.shapes)?,
            ),
            Self::config_record(items),
        ])
    }

    /// A secure stage's messages to the round's clients by SecAgg+ id; the replies'
    /// payloads as an inbox.
    fn stage(&mut self, stage: Stage, payloads: Vec<(u32, Vec<u8>)>) -> Inbox {
        let round = self.round.0;
        let (ids, contents): (Vec<u32>, Vec<Content>) = payloads
            .into_iter()
            .map(|(id, payload)| {
                (
                    id,
                    vec![Self::config_record(vec![
                        ("round", ConfigValue::Int(round as i64)),
                        ("payload", ConfigValue::Bytes(payload)),
                    ])],
                )
            })
            .unzip();
        let clients: Vec<usize> = ids
            .iter()
            .filter_map(|&id| self.round.1.get(id as usize).copied())
            .collect();
        if clients.len() != ids.len() {
            tracing::error!("{}: an id outside the round", stage.name());
            return Inbox::new();
        }
        payload_inbox(
            &ids,
            self.send(&dialect::stage_type(stage), &clients, contents),
        )
    }
}

/// The `payload` of each reply, by the SecAgg+ id of its position.
fn payload_inbox(ids: &[u32], replies: BTreeMap<usize, Content>) -> Inbox {
    replies
        .into_iter()
        .filter_map(|(at, content)| {
            let payload = Reader::new("a stage's reply", &content).bytes("payload");
            match payload {
                Ok(bytes) => Some((ids[at], bytes.to_vec())),
                Err(e) => {
                    tracing::info!("client {}: {e}", ids[at]);
                    None
                }
            }
        })
        .collect()
}

impl Transport for FlowerClients<'_> {
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, Result<ClientReply>)> {
        let content = match self.training_content(request, vec![]) {
            Ok(content) => content,
            Err(e) => {
                let why = e.to_string();
                return clients
                    .iter()
                    .map(|&c| (c, Err(Error::Usage(why.clone()))))
                    .collect();
            }
        };
        let mut replies = self.send(dialect::TRAIN, clients, vec![content; clients.len()]);
        let dtype = request.params.dtype();
        clients
            .iter()
            .enumerate()
            .map(|(at, &client)| {
                let reply = match replies.remove(&at) {
                    Some(content) => client_reply(&content, &self.shapes, dtype),
                    None => Err(Error::Usage(format!("client {client} sent no update"))),
                };
                (client, reply)
            })
            .collect()
    }

    fn secure(&mut self) -> Option<&mut dyn SecureTransport> {
        Some(self)
    }
}

/// A plain round's reply: the update and whether it was within C.
fn client_reply(content: &Content, shapes: &[Vec<usize>], dtype: DType) -> Result<ClientReply> {
    let reader = Reader::new("a client's update", content);
    Ok(ClientReply {
        update: dialect::params_from(reader.arrays()?, shapes, dtype, "a client's update")?,
        within_clip: reader.flag("within_clip")?,
    })
}

impl SecureTransport for FlowerClients<'_> {
    fn begin(&mut self, request: &RoundRequest, setup: &SecureSetup, clients: &[usize]) -> Inbox {
        self.round = (request.round, clients.to_vec());
        let contents: Result<Vec<Content>> = (0..clients.len())
            .map(|id| {
                self.training_content(
                    request,
                    vec![
                        ("id", ConfigValue::Int(id as i64)),
                        ("clients", ConfigValue::Int(clients.len() as i64)),
                        (
                            "rotation_seed",
                            ConfigValue::Bytes(setup.quantiser.rotation_seed().to_vec()),
                        ),
                        (
                            "graph_seed",
                            ConfigValue::Bytes(setup.params.graph_seed.to_vec()),
                        ),
                    ],
                )
            })
            .collect();
        let contents = match contents {
            Ok(contents) => contents,
            Err(e) => {
                tracing::error!("train.keys: {e}");
                return Inbox::new();
            }
        };
        let ids: Vec<u32> = (0..clients.len() as u32).collect();
        let replies = self.send(&dialect::stage_type(Stage::Keys), clients, contents);
        payload_inbox(&ids, replies)
    }

    fn share_keys(&mut self, keys: &BTreeMap<u32, NeighbourKeys>) -> Inbox {
        let payloads = keys.iter().map(|(id, m)| (*id, m.encode())).collect();
        self.stage(Stage::Shares, payloads)
    }

    fn masked_input(&mut self, held: &BTreeMap<u32, SharesForHolder>) -> Inbox {
        let payloads = held.iter().map(|(id, m)| (*id, m.encode())).collect();
        self.stage(Stage::MaskedInput, payloads)
    }

    fn unmask(&mut self, request: &UnmaskRequest) -> Inbox {
        let payloads = request
            .survivors
            .iter()
            .map(|id| (*id, request.encode()))
            .collect();
        self.stage(Stage::Unmask, payloads)
    }

    fn sealed_updates(
        &mut self,
        _: &RoundRequest,
        _: &HeSetup,
        _: &dyn crate::federated::he::Sealer,
        _: &[usize],
        _: Option<[u8; 32]>,
    ) -> Inbox {
        tracing::error!("homomorphic aggregation does not run over Flower nodes yet");
        Inbox::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_truncated_or_huge_one_is_an_error() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, b"hello").unwrap();
        write_frame(&mut pipe, b"").unwrap();
        let mut input = pipe.as_slice();
        assert_eq!(read_frame(&mut input).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut input).unwrap().unwrap(), b"");
        assert!(read_frame(&mut input).unwrap().is_none());
        let mut truncated = &pipe[..6];
        assert!(read_frame(&mut truncated).is_err());
        let mut half_length = &pipe[..2];
        assert!(read_frame(&mut half_length).is_err());
        let mut huge = &[0xffu8, 0xff, 0xff, 0xff][..];
        let err = read_frame(&mut huge).unwrap_err().to_string();
        assert!(err.contains("1 GiB"), "{err}");
    }
}
