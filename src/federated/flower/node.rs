//! `dptrain fl node`: a Flower SuperNode in Rust. It connects to a stock
//! `flower-superlink` (flwr 1.42) over the Fleet API, sends heartbeats from a thread of its
//! own, and answers the messages the dptrain ServerApp routes to it ([`super::dialect`])
//! with the federated round engine's client side: plain rounds, and SecAgg+'s four stages
//! with or without the clients' noise shares (distributed DP).
//!
//! The node never listens on a socket and decides nothing about privacy from what the
//! server says: the aggregation, the clip bound and the noise come from its own config,
//! and a message that asks for less (a plain round of a secure run, another C) is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::DType;

use super::dialect::{self, ConfigValue, Reader};
use super::fleet::Fleet;
use super::objects::Object;
use super::proto;
use super::records::{self, Content, Record};
use crate::error::{Error, Result};
use crate::federated::round::{InProcess, RoundRequest, Transport};
use crate::federated::secure::{Aggregation, SecureClient, SecurePlan, Stage};
use crate::model::DpModule;
use crate::secagg::Graph;
use crate::secagg::messages::{NeighbourKeys, SharesForHolder, UnmaskRequest};

/// Flower's error code for an app that raised (`CLIENT_APP_RAISED_EXCEPTION`).
const APP_RAISED: i64 = 2;

/// What the node computes: one client of the federation.
pub struct ClientTask<'a, M> {
    /// The client's training (one module; its partition and data).
    pub training: InProcess<'a, M>,
    /// Its index in the partition.
    pub client: usize,
    /// How the federation aggregates (from the node's own config).
    pub aggregation: Aggregation,
    /// C from the node's own config (adaptive clipping only moves it in plain rounds).
    pub clip_norm: f64,
    /// The secure aggregation plan (None: plain).
    pub plan: Option<SecurePlan>,
    /// SHA-256 of the resolved config, which the server compares with its own.
    pub config_sha256: String,
    /// The round under way in a secure run: its number, the client's SecAgg+ id and state.
    secure: Option<(u64, u32, SecureClient)>,
}

impl<'a, M: DpModule + Sync> ClientTask<'a, M> {
    /// The task of `client`, trained by `training`.
    pub fn new(
        training: InProcess<'a, M>,
        client: usize,
        aggregation: Aggregation,
        clip_norm: f64,
        plan: Option<SecurePlan>,
        config_sha256: String,
    ) -> Self {
        ClientTask {
            training,
            client,
            aggregation,
            clip_norm,
            plan,
            config_sha256,
            secure: None,
        }
    }

    fn shapes(&self) -> Result<(Vec<Vec<usize>>, DType)> {
        let module = self
            .training
            .modules
            .first()
            .ok_or_else(|| Error::Usage("a node without a model".into()))?;
        let params = module.parameters();
        let dtype = params.first().map_or(DType::F32, |p| p.dtype());
        Ok((params.iter().map(|p| p.dims().to_vec()).collect(), dtype))
    }

    /// The round request a training message carries.
    fn request(&self, reader: &Reader, what: &str) -> Result<RoundRequest> {
        let (shapes, dtype) = self.shapes()?;
        Ok(RoundRequest {
            round: reader.count("round")?,
            params: dialect::params_from(reader.arrays()?, &shapes, dtype, what)?,
            clip_norm: reader.float("clip_norm")?,
        })
    }

    /// This client's reply to `request`.
    fn train(&mut self, request: &RoundRequest) -> Result<crate::federated::ClientReply> {
        let client = self.client;
        self.training
            .exchange(request, &[client])
            .pop()
            .map(|(_, reply)| reply)
            .unwrap_or_else(|| {
                Err(Error::Usage(
                    "the client's training returned nothing".into(),
                ))
            })
    }

    /// The reply content to a message of `message_type` with `content`.
    pub fn handle(&mut self, message_type: &str, content: &Content) -> Result<Content> {
        let reader = Reader::new(message_type, content);
        let payload = |bytes: Vec<u8>| -> Content {
            vec![(
                "config".into(),
                Record::Config(dialect::config(vec![(
                    "payload",
                    ConfigValue::Bytes(bytes),
                )])),
            )]
        };
        match message_type {
            dialect::HELLO => Ok(vec![(
                "config".into(),
                Record::Config(dialect::config(vec![
                    ("client", ConfigValue::Int(self.client as i64)),
                    (
                        "config_sha256",
                        ConfigValue::Text(self.config_sha256.clone()),
                    ),
                ])),
            )]),
            dialect::FINISH => {
                self.secure = None;
                Ok(vec![(
                    "config".into(),
                    Record::Config(dialect::config(vec![])),
                )])
            }
            dialect::TRAIN => {
                if self.aggregation != Aggregation::Plain {
                    return Err(Error::Usage(format!(
                        "a plain round, but this node's config aggregates by {}: the server \
                         would see this client's update",
                        self.aggregation.name()
                    )));
                }
                let request = self.request(&reader, message_type)?;
                let reply = self.train(&request)?;
                let (shapes, _) = self.shapes()?;
                Ok(vec![
                    (
                        "arrays".into(),
                        dialect::params_record(&reply.update, &shapes)?,
                    ),
                    (
                        "config".into(),
                        Record::Config(dialect::config(vec![(
                            "within_clip",
                            ConfigValue::Bool(reply.within_clip),
                        )])),
                    ),
                ])
            }
            _ => {
                let Some(stage) = dialect::stage_of(message_type) else {
                    return Err(Error::invalid(
                        "Flower message type",
                        message_type,
                        "a message of the dptrain ServerApp (train, train.keys, ...)",
                    ));
                };
                let Some(plan) = self.plan.clone() else {
                    return Err(Error::Usage(format!(
                        "a secure round's {message_type}, but this node's config aggregates \
                         by {}",
                        self.aggregation.name()
                    )));
                };
                let round = reader.count("round")?;
                if stage == Stage::Keys {
                    return Ok(payload(self.begin(&reader, &plan, message_type)?));
                }
                let Some((current, _, client)) = self.secure.as_mut().filter(|s| s.0 == round)
                else {
                    return Err(Error::Usage(format!(
                        "{message_type} of round {round}, for which this node holds no keys"
                    )));
                };
                debug_assert_eq!(*current, round);
                let bytes = reader.bytes("payload")?;
                let answer = match stage {
                    Stage::Shares => client.share_keys(&NeighbourKeys::decode(bytes)?)?,
                    Stage::MaskedInput => client.masked_input(&SharesForHolder::decode(bytes)?)?,
                    _ => {
                        let answer = client.unmask(&UnmaskRequest::decode(bytes)?)?;
                        self.secure = None;
                        answer
                    }
                };
                Ok(payload(answer))
            }
        }
    }

    /// Stage 1 of a secure round: train, quantise (and add the noise share), answer with
    /// the SecAgg+ keys.
    fn begin(&mut self, reader: &Reader, plan: &SecurePlan, what: &str) -> Result<Vec<u8>> {
        let request = self.request(reader, what)?;
        if request.clip_norm != self.clip_norm {
            return Err(Error::invalid(
                format!("{what}: config key \"clip_norm\""),
                request.clip_norm,
                format!("this node's C = {}", self.clip_norm),
            ));
        }
        let id = u32::try_from(reader.count("id")?)
            .map_err(|_| Error::invalid(format!("{what}: id"), "too large", "a SecAgg+ id"))?;
        let clients = reader.count("clients")?;
        let (rotation, graph_seed) = (reader.seed("rotation_seed")?, reader.seed("graph_seed")?);
        if plan.seed.is_some() {
            // A reproducible run: both seeds follow from the config, as the server's must.
            let own = plan.setup(request.round, clients)?;
            if own.params.graph_seed != graph_seed || own.quantiser.rotation_seed() != rotation {
                return Err(Error::Usage(format!(
                    "{what}: the server's round seeds differ from those this node's config \
                     gives (a different seed or secure_noise)"
                )));
            }
        }
        let setup = plan.setup_with(request.round, clients, rotation, graph_seed)?;
        let graph = Graph::new(&setup.params)?;
        let reply = self.train(&request)?;
        let (client, keys) = SecureClient::begin(&reply, &setup, &graph, id)?;
        self.secure = Some((request.round, id, client));
        Ok(keys)
    }
}

/// How a node connects and behaves.
pub struct NodeOptions {
    /// The SuperLink, `http://host:port` or `https://host:port`.
    pub superlink: String,
    /// PEM root certificates to trust (TLS).
    pub root_certificates: Option<Vec<u8>>,
    /// A key the SuperLink operator registered (SuperNode authentication): the node does
    /// not register or unregister itself. None: a fresh key, registered by the node.
    pub key: Option<super::auth::NodeKey>,
    /// The heartbeat interval the node announces, seconds (10 to 1800).
    pub heartbeat: f64,
    /// How long to wait between pulls that bring nothing.
    pub poll: Duration,
    /// Leave after the first run that finishes (else serve runs until stopped).
    pub once: bool,
    /// Give up after this long without a message (None: never).
    pub max_idle: Option<Duration>,
    /// Tests: die without a word (abort) right after replying to this stage of this round.
    pub die_after: Option<(u64, Stage)>,
}

/// Runs a node until its run finishes (`once`) or `max_idle` passes.
pub fn run_node<M: DpModule + Sync>(
    task: &mut ClientTask<'_, M>,
    mut options: NodeOptions,
) -> Result<()> {
    let self_registered = options.key.is_none();
    let key = match options.key.take() {
        Some(key) => key,
        None => super::auth::NodeKey::generate()?,
    };
    let fleet = Arc::new(Fleet::new(
        &options.superlink,
        key,
        options.root_certificates.as_deref(),
        super::fleet::Retry::default(),
    )?);
    let version = fleet.check_version()?;
    if self_registered {
        fleet.register()?;
    }
    let node_id = fleet.activate(options.heartbeat)?;
    tracing::info!(
        "node {node_id} (client {}) online at {} (flwr {version})",
        task.client,
        options.superlink
    );
    let stop = Arc::new(AtomicBool::new(false));
    let beat = heartbeats(fleet.clone(), node_id, options.heartbeat, stop.clone());
    let served = serve(&fleet, node_id, task, &options);
    stop.store(true, Ordering::Relaxed);
    let _ = beat.join();
    let left = fleet.leave(node_id, self_registered);
    served?;
    left
}

/// Sends heartbeats every 0.7 to 0.9 of (interval − 5 s), as flwr's own node does, until
/// `stop`.
fn heartbeats(
    fleet: Arc<Fleet>,
    node_id: u64,
    interval: f64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(((interval - 5.0) * 0.8).max(1.0));
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < period {
                continue;
            }
            last = Instant::now();
            match fleet.heartbeat(node_id, interval) {
                Ok(true) => {}
                Ok(false) => tracing::error!("the SuperLink no longer knows node {node_id}"),
                Err(e) => tracing::warn!("heartbeat: {e}"),
            }
        }
    })
}

/// The pull, compute, push loop.
fn serve<M: DpModule + Sync>(
    fleet: &Fleet,
    node_id: u64,
    task: &mut ClientTask<'_, M>,
    options: &NodeOptions,
) -> Result<()> {
    let mut idle_since = Instant::now();
    loop {
        let pulled = fleet.pull_messages(node_id)?;
        let (Some(message), Some(tree)) = (
            pulled.messages_list.into_iter().next(),
            pulled.message_object_trees.into_iter().next(),
        ) else {
            if options
                .max_idle
                .is_some_and(|max| idle_since.elapsed() > max)
            {
                return Err(Error::Usage(format!(
                    "no message from the SuperLink in {:?}; leaving",
                    idle_since.elapsed()
                )));
            }
            std::thread::sleep(options.poll);
            continue;
        };
        idle_since = Instant::now();
        let metadata = message.metadata.unwrap_or_default();
        let run_id = metadata.run_id;
        let outcome = pull_tree(fleet, node_id, run_id, &tree)
            .and_then(|objects| {
                fleet.confirm(node_id, run_id, &metadata.message_id)?;
                records::inflate(&metadata.message_id, &objects)
            })
            .and_then(|(_, content)| task.handle(&metadata.message_type, &content));
        let reply = reply_metadata(&metadata, node_id);
        let (deflated, wire) = match outcome {
            Ok(content) => {
                let deflated = records::deflate(&reply, &content, super::objects::MAX_CHUNK);
                let wire = proto::Message {
                    metadata: Some(proto::Metadata {
                        message_id: deflated.message_id.clone(),
                        ..reply
                    }),
                    content: Some(proto::RecordDict::default()),
                    error: None,
                };
                (deflated, wire)
            }
            Err(e) => {
                tracing::warn!("{} of run {run_id}: {e}", metadata.message_type);
                let reason = e.to_string();
                let deflated = records::deflate_error(&reply, APP_RAISED, &reason);
                let wire = proto::Message {
                    metadata: Some(proto::Metadata {
                        message_id: deflated.message_id.clone(),
                        ..reply
                    }),
                    content: None,
                    error: Some(proto::Error {
                        code: APP_RAISED,
                        reason,
                    }),
                };
                (deflated, wire)
            }
        };
        if let Err(e) = fleet.push_reply(node_id, run_id, wire, &deflated) {
            tracing::warn!("{} of run {run_id}: {e}", metadata.message_type);
        }
        tracing::info!("answered {} of run {run_id}", metadata.message_type);
        if let (Some((round, stage)), Some(at)) =
            (options.die_after, dialect::stage_of(&metadata.message_type))
            && task.secure.as_ref().map(|s| s.0) == Some(round)
            && at == stage
        {
            tracing::warn!(
                "dying after {} of round {round}, as asked",
                metadata.message_type
            );
            std::process::abort();
        }
        if metadata.message_type == dialect::FINISH && options.once {
            wait_for_end(fleet, node_id, run_id);
            return Ok(());
        }
    }
}

/// Waits (at most two minutes) until run `run_id` is no longer running: the ServerApp
/// pulls the replies of nodes that are online only.
fn wait_for_end(fleet: &Fleet, node_id: u64, run_id: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        match fleet.get_run(node_id, run_id) {
            Ok(run) if run.status.as_ref().is_some_and(|s| s.status == "running") => {
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => return,
        }
    }
}

/// The objects of a message's tree, pulled (children first) and checked against their
/// ids; an object registered but not uploaded yet is pulled again with back-off, at most
/// two minutes.
fn pull_tree(
    fleet: &Fleet,
    node_id: u64,
    run_id: u64,
    tree: &proto::ObjectTree,
) -> Result<HashMap<String, Object>> {
    let mut ids = Vec::new();
    post_order(tree, &mut ids, 0)?;
    let mut objects = HashMap::new();
    for id in ids {
        if objects.contains_key(&id) {
            continue;
        }
        let start = Instant::now();
        let mut wait = Duration::from_millis(100);
        let bytes = loop {
            if let Some(bytes) = fleet.pull_object(node_id, run_id, &id)? {
                break bytes;
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Err(Error::Usage(format!(
                    "object {} of run {run_id} was not uploaded within {:?}",
                    &id[..id.len().min(12)],
                    start.elapsed()
                )));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(10));
        };
        objects.insert(id.clone(), Object::decode(&id, &bytes)?);
    }
    Ok(objects)
}

/// The ids of `tree`, children before parents; a tree deeper than a message's is refused.
fn post_order(tree: &proto::ObjectTree, out: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 8 {
        return Err(Error::invalid(
            "ObjectTree",
            "deeper than 8 levels",
            "a message's tree (Message, RecordDict, record, Array, ArrayChunk)",
        ));
    }
    for child in &tree.children {
        post_order(child, out, depth + 1)?;
    }
    out.push(tree.object_id.clone());
    Ok(())
}

/// A reply's metadata to the instruction `ins`, as flwr 1.42 builds it.
fn reply_metadata(ins: &proto::Metadata, node_id: u64) -> proto::Metadata {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    proto::Metadata {
        run_id: ins.run_id,
        message_id: String::new(),
        src_node_id: node_id,
        dst_node_id: ins.src_node_id,
        reply_to_message_id: ins.message_id.clone(),
        group_id: ins.group_id.clone(),
        ttl: ins.created_at + ins.ttl - now,
        message_type: ins.message_type.clone(),
        created_at: now,
        src_task_id: ins.dst_task_id,
        dst_task_id: ins.src_task_id,
    }
}
