//! The Fleet API client of a SuperNode (flwr 1.42): protobuf over HTTP, `POST
//! {superlink}/v1/fleet/<rpc>` with `content-type: application/protobuf` and the node's
//! signed headers ([`super::auth`]).
//!
//! dptrain opens no socket of its own: it only dials the SuperLink. Transport failures and
//! 502/503/504 answers are retried with exponential back-off (bounded in tries and time);
//! 401 (the SuperLink refused the node's signature) and other answers are errors that quote
//! the SuperLink's `{"code", "detail"}`. At start the node reads the SuperLink's version
//! from `/openapi.json` (the Fleet API reports none) and refuses any but 1.42.

use std::time::{Duration, Instant};

use super::auth::{NodeKey, timestamp_now};
use super::proto;
use crate::error::{Error, Result};

/// The Flower version dptrain speaks (major.minor).
pub const FLOWER_VERSION: &str = "1.42";
/// The largest answer read (a pulled object is at most a 5 MiB chunk and its head).
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// How calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries per call, the first included.
    pub tries: u32,
    /// The first wait; each next wait doubles, up to `max_wait`.
    pub first_wait: Duration,
    /// The longest wait.
    pub max_wait: Duration,
    /// No retry starts after this much time since the call's first try.
    pub deadline: Duration,
    /// Each request's own time limit.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            tries: 10,
            first_wait: Duration::from_millis(250),
            max_wait: Duration::from_secs(20),
            deadline: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A node's connection to a SuperLink.
pub struct Fleet {
    agent: ureq::Agent,
    base: String,
    key: NodeKey,
    retry: Retry,
}

impl Fleet {
    /// A client of the SuperLink at `superlink` (`http://host:port`, or `https://` with
    /// `root_certificates`, a PEM file's bytes, to trust), signing with `key`.
    pub fn new(
        superlink: &str,
        key: NodeKey,
        root_certificates: Option<&[u8]>,
        retry: Retry,
    ) -> Result<Self> {
        let base = superlink.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(
                "--superlink",
                superlink,
                "http://HOST:PORT, or https://HOST:PORT with TLS",
            ));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(retry.timeout));
        if let Some(pem) = root_certificates {
            let certificates = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid("root certificates", e, "PEM certificates"))?;
            if certificates.is_empty() {
                return Err(Error::invalid(
                    "root certificates",
                    "no certificate",
                    "at least one PEM certificate",
                ));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(
                        certificates,
                    )))
                    .build(),
            );
        }
        Ok(Fleet {
            agent: config.build().into(),
            base,
            key,
            retry,
        })
    }

    /// The node's key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// The SuperLink's Flower version, refused unless it is [`FLOWER_VERSION`].
    pub fn check_version(&self) -> Result<String> {
        let url = format!("{}/openapi.json", self.base);
        let body = self.with_retries("openapi.json", || {
            Ok(status_and_body(self.agent.get(&url).call()?)?)
        })?;
        let version = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["info"]["version"].as_str().map(str::to_string))
            .ok_or_else(|| {
                Error::invalid(
                    "SuperLink /openapi.json",
                    "no info.version",
                    "the SuperLink's OpenAPI document",
                )
            })?;
        if version.split('.').take(2).collect::<Vec<_>>().join(".") != FLOWER_VERSION {
            return Err(Error::invalid(
                "SuperLink version",
                &version,
                format!(
                    "flwr {FLOWER_VERSION}.x (dptrain speaks its Fleet API; install \
                     flwr=={FLOWER_VERSION}.* on the server)"
                ),
            ));
        }
        Ok(version)
    }

    /// One Fleet call: `request` to `/v1/fleet/<rpc>`, its answer decoded.
    pub fn call<Q: prost::Message, A: prost::Message + Default>(
        &self,
        rpc: &str,
        request: &Q,
    ) -> Result<A> {
        let url = format!("{}/v1/fleet/{rpc}", self.base);
        let body = request.encode_to_vec();
        let answer = self.with_retries(rpc, || {
            let mut call = self
                .agent
                .post(&url)
                .header("content-type", "application/protobuf")
                .header("accept", "application/protobuf");
            for (name, value) in self.key.headers(&timestamp_now()).map_err(Failure::Fatal)? {
                call = call.header(name, value);
            }
            Ok(status_and_body(call.send(&body[..])?)?)
        })?;
        A::decode(answer.as_slice()).map_err(|e| {
            Error::invalid(
                format!("the SuperLink's answer to {rpc}"),
                e,
                "a protobuf answer of flwr 1.42's Fleet API",
            )
        })
    }

    /// Runs `attempt` until it returns 200, retrying transport errors and 502/503/504.
    fn with_retries(
        &self,
        what: &str,
        attempt: impl Fn() -> std::result::Result<(u16, Vec<u8>), Failure>,
    ) -> Result<Vec<u8>> {
        let start = Instant::now();
        let mut wait = self.retry.first_wait;
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match attempt() {
                Ok((200, body)) => return Ok(body),
                Ok((status @ (502..=504), _)) => format!("HTTP {status}"),
                Ok((401, _)) => {
                    return Err(Error::Usage(format!(
                        "the SuperLink refused this node's authentication on {what} (401): \
                         check the node key, and the clocks (the timestamp must be within \
                         5 s ahead and 300 s behind the SuperLink's)"
                    )));
                }
                Ok((status, body)) => {
                    return Err(Error::Usage(format!(
                        "the SuperLink answered {what} with HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    )));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transport(e)) => e.to_string(),
            };
            if tries >= self.retry.tries || start.elapsed() + wait > self.retry.deadline {
                return Err(Error::Usage(format!(
                    "the SuperLink at {} did not answer {what} after {tries} tries in {:.0?}: \
                     {why}",
                    self.base,
                    start.elapsed()
                )));
            }
            tracing::warn!("{what}: {why}; retrying in {wait:?} (try {tries})");
            std::thread::sleep(wait);
            wait = (wait * 2).min(self.retry.max_wait);
        }
    }

    /// RegisterNode (a node without SuperNode authentication registers its own key).
    pub fn register(&self) -> Result<u64> {
        let answer: proto::RegisterNodeFleetResponse = self.call(
            "register-node",
            &proto::RegisterNodeFleetRequest {
                public_key: self.key.public_pem().to_vec(),
            },
        )?;
        Ok(answer.node_id)
    }

    /// ActivateNode: online, heartbeats every `heartbeat` seconds (10 to 1800).
    pub fn activate(&self, heartbeat: f64) -> Result<u64> {
        let answer: proto::ActivateNodeResponse = self.call(
            "activate-node",
            &proto::ActivateNodeRequest {
                public_key: self.key.public_pem().to_vec(),
                heartbeat_interval: heartbeat,
            },
        )?;
        Ok(answer.node_id)
    }

    /// SendNodeHeartbeat; false when the SuperLink no longer knows the node.
    pub fn heartbeat(&self, node_id: u64, heartbeat: f64) -> Result<bool> {
        let answer: proto::SendNodeHeartbeatResponse = self.call(
            "send-node-heartbeat",
            &proto::SendNodeHeartbeatRequest {
                node: Some(proto::Node { node_id }),
                heartbeat_interval: heartbeat,
            },
        )?;
        Ok(answer.success)
    }

    /// PullMessages: at most one instruction for the node, with its object tree.
    pub fn pull_messages(&self, node_id: u64) -> Result<proto::PullMessagesResponse> {
        self.call(
            "pull-messages",
            &proto::PullMessagesRequest {
                node: Some(proto::Node { node_id }),
                message_ids: Vec::new(),
            },
        )
    }

    /// PullObject: the object's bytes; None while it is registered but not yet uploaded
    /// (pull again later); an error if the SuperLink does not know it.
    pub fn pull_object(
        &self,
        node_id: u64,
        run_id: u64,
        object_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let answer: proto::PullObjectResponse = self.call(
            "pull-object",
            &proto::PullObjectRequest {
                node: Some(proto::Node { node_id }),
                run_id,
                object_id: object_id.to_string(),
            },
        )?;
        match (answer.object_found, answer.object_available) {
            (true, true) => Ok(Some(answer.object_content)),
            (true, false) => Ok(None),
            (false, _) => Err(Error::invalid(
                "PullObject",
                format!("object {object_id} of run {run_id} not found"),
                "an object of a message addressed to this node",
            )),
        }
    }

    /// ConfirmMessageReceived: the SuperLink may drop the message's objects.
    pub fn confirm(&self, node_id: u64, run_id: u64, message_id: &str) -> Result<()> {
        let _: proto::ConfirmMessageReceivedResponse = self.call(
            "confirm-message-received",
            &proto::ConfirmMessageReceivedRequest {
                node: Some(proto::Node { node_id }),
                run_id,
                message_object_id: message_id.to_string(),
            },
        )?;
        Ok(())
    }

    /// PushMessages of one reply (the SuperLink reads only the first), then PushObject of
    /// each object it asks for. An answer asking for no object means the SuperLink
    /// refused the reply (it answers 200 either way).
    pub fn push_reply(
        &self,
        node_id: u64,
        run_id: u64,
        message: proto::Message,
        reply: &super::records::Deflated,
    ) -> Result<()> {
        let answer: proto::PushMessagesResponse = self.call(
            "push-messages",
            &proto::PushMessagesRequest {
                node: Some(proto::Node { node_id }),
                messages_list: vec![message],
                message_object_trees: vec![reply.tree.clone()],
                clientapp_runtime_list: vec![0.0],
            },
        )?;
        if answer.objects_to_push.is_empty() {
            return Err(Error::Usage(format!(
                "the SuperLink refused the reply {} (the instruction expired, was \
                 answered already, or its run ended)",
                &reply.message_id[..12]
            )));
        }
        for object in &reply.objects {
            let id = object.id();
            if !answer.objects_to_push.contains(&id) {
                continue;
            }
            let stored: proto::PushObjectResponse = self.call(
                "push-object",
                &proto::PushObjectRequest {
                    node: Some(proto::Node { node_id }),
                    run_id,
                    object_id: id.clone(),
                    object_content: object.encode(),
                    session_id: answer.session_id.clone(),
                },
            )?;
            if !stored.stored {
                return Err(Error::Usage(format!(
                    "the SuperLink did not store object {} of the reply (its push session \
                     expired, or it was not expected)",
                    &id[..12]
                )));
            }
        }
        Ok(())
    }

    /// GetRun: the run's record (its status, its app); an error once the run is no
    /// longer running or the node is not in its federation (HTTP 403).
    pub fn get_run(&self, node_id: u64, run_id: u64) -> Result<proto::Run> {
        let answer: proto::GetRunResponse = self.call(
            "get-run",
            &proto::GetRunRequest {
                node: Some(proto::Node { node_id }),
                run_id,
            },
        )?;
        answer
            .run
            .ok_or_else(|| Error::invalid("GetRun", "no run", "the run's record"))
    }

    /// DeactivateNode, then UnregisterNode (a self-registered node leaving).
    pub fn leave(&self, node_id: u64, unregister: bool) -> Result<()> {
        let _: proto::DeactivateNodeResponse =
            self.call("deactivate-node", &proto::DeactivateNodeRequest { node_id })?;
        if unregister {
            let _: proto::UnregisterNodeFleetResponse = self.call(
                "unregister-node",
                &proto::UnregisterNodeFleetRequest { node_id },
            )?;
        }
        Ok(())
    }
}

/// An answer's status and its body (at most [`MAX_ANSWER`] bytes).
fn status_and_body(
    mut answer: ureq::http::Response<ureq::Body>,
) -> std::result::Result<(u16, Vec<u8>), ureq::Error> {
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()?;
    Ok((status, body))
}

/// Why one try failed.
enum Failure {
    /// Worth retrying (the SuperLink unreachable, a reset connection, a timeout).
    Transport(ureq::Error),
    /// Not worth retrying.
    Fatal(Error),
}

impl From<ureq::Error> for Failure {
    fn from(e: ureq::Error) -> Self {
        Failure::Transport(e)
    }
}
