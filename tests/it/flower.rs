//! dptrain's Fleet client against a real `flower-superlink` (flwr 1.42, from the venv that
//! scripts/test-deps.sh installs) on 127.0.0.1. The SuperLink is started and stopped by the
//! test; every wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dptrain::federated::flower::auth::NodeKey;
use dptrain::federated::flower::fleet::{Fleet, Retry};

/// The venv with flwr 1.42 (scripts/test-deps.sh).
fn venv() -> PathBuf {
    std::env::var_os("DPTRAIN_FLWR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/dptrain/flwr-1.42")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A SuperLink on 127.0.0.1, in its own process group (it starts helpers of its own),
/// killed with them on drop.
struct SuperLink {
    child: Child,
    port: u16,
    home: tempdir::Dir,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The files of a SuperLink that speaks TLS (PEM): the CA the nodes trust, the server's
/// certificate (its SAN names 127.0.0.1) and its key.
struct Tls {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

impl SuperLink {
    /// A plain-HTTP SuperLink (loopback only) that lets nodes register themselves.
    fn start() -> SuperLink {
        SuperLink::start_with(None, false)
    }

    /// A SuperLink with `tls` (else plain HTTP) and, with `authenticate`, SuperNode
    /// authentication (only registered keys may act).
    fn start_with(tls: Option<&Tls>, authenticate: bool) -> SuperLink {
        let venv = venv();
        let binary = venv.join("bin/flower-superlink");
        assert!(
            binary.exists(),
            "{} is missing: run scripts/test-deps.sh (it installs flwr 1.42 there)",
            binary.display()
        );
        let home = std::env::temp_dir().join(format!(
            "dptrain-flwr-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&home).unwrap();
        let port = free_port();
        let path = format!(
            "{}:{}",
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(home.join("superlink.log")).unwrap();
        let mut command = Command::new(&binary);
        match tls {
            None => command.arg("--insecure"),
            Some(tls) => command
                .arg("--ssl-ca-certfile")
                .arg(&tls.ca)
                .arg("--ssl-certfile")
                .arg(&tls.certificate)
                .arg("--ssl-keyfile")
                .arg(&tls.key),
        };
        if authenticate {
            command.arg("--enable-supernode-auth");
        }
        let child = command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--disable-runtime-dependency-installation")
            .env("PATH", path)
            .env("FLWR_HOME", &home)
            .env("FLWR_TELEMETRY_ENABLED", "0")
            .env("FLWR_DISABLE_UPDATE_CHECK", "1")
            .env(TAG, &home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let superlink = SuperLink {
            child,
            port,
            home: tempdir::Dir(home.clone()),
        };
        // Healthy (over TLS: listening) within 60 s (about 2 s here), or the test fails
        // with the log.
        let start = Instant::now();
        let ready = |port| match tls {
            None => healthy(port),
            Some(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !ready(port) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the SuperLink did not start: {}",
                std::fs::read_to_string(home.join("superlink.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        superlink
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for SuperLink {
    fn drop(&mut self) {
        // SIGTERM to the group (the SuperLink stops its helpers), SIGKILL after 5 s.
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) on the process group the SuperLink leads.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever of the group is left.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        // The ServerApp and what it started run in groups of their own: find them by the
        // tag they inherited.
        kill_tagged(&format!("{TAG}={}", self.home.0.display()));
    }
}

/// The environment variable that marks the processes a test's SuperLink started.
const TAG: &str = "DPTRAIN_TEST_SUPERLINK";

/// SIGKILLs every process whose environment holds `tag` (`NAME=value`).
fn kill_tagged(tag: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|var| var == tag.as_bytes()) {
            // SAFETY: kill(2) on a process this test's SuperLink started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// GET /health answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn quick() -> Retry {
    Retry {
        tries: 3,
        first_wait: Duration::from_millis(50),
        max_wait: Duration::from_millis(200),
        deadline: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn a_node_registers_activates_beats_pulls_and_leaves_a_real_superlink() {
    let superlink = SuperLink::start();
    let fleet = Fleet::new(
        &superlink.url(),
        NodeKey::generate().unwrap(),
        None,
        quick(),
    )
    .unwrap();
    assert!(fleet.check_version().unwrap().starts_with("1.42."));
    let registered = fleet.register().unwrap();
    let node = fleet.activate(30.0).unwrap();
    assert_eq!(node, registered);
    assert!(fleet.heartbeat(node, 30.0).unwrap());
    let pulled = fleet.pull_messages(node).unwrap();
    assert!(pulled.messages_list.is_empty(), "no run, no instruction");
    // A run that does not exist: errors that name the call, not a panic.
    let error = fleet.get_run(node, 987_654).unwrap_err().to_string();
    assert!(
        error.contains("get-run") || error.contains("GetRun"),
        "{error}"
    );
    let error = fleet
        .pull_object(node, 987_654, &"ab".repeat(32))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pull-object") || error.contains("PullObject"),
        "{error}"
    );
    fleet.leave(node, true).unwrap();
    // Gone: the SuperLink no longer takes its heartbeat (an error or success = false).
    assert!(!fleet.heartbeat(node, 30.0).unwrap_or(false));
    // Another key cannot act for this node: its signature is valid but names another node.
    let other = Fleet::new(
        &superlink.url(),
        NodeKey::generate().unwrap(),
        None,
        quick(),
    )
    .unwrap();
    let error = other.heartbeat(registered, 30.0).unwrap_err().to_string();
    assert!(error.contains("401") || error.contains("HTTP"), "{error}");
}

#[test]
fn a_superlink_that_is_down_is_an_error_after_bounded_retries() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let fleet = Fleet::new(&url, NodeKey::generate().unwrap(), None, quick()).unwrap();
    let start = Instant::now();
    let error = fleet.register().unwrap_err().to_string();
    assert!(
        error.contains("did not answer register-node after 3 tries"),
        "{error}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let error = Fleet::new(
        "127.0.0.1:9092",
        NodeKey::generate().unwrap(),
        None,
        quick(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("--superlink"), "{error}");
}

/// A fake SuperLink on 127.0.0.1 that answers every request with `status`, for at most
/// `requests` requests and 20 s; the URL and the number of requests it answered.
fn answering(status: u16, requests: usize) -> (String, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let start = Instant::now();
        let mut answered = 0;
        while answered < requests && start.elapsed() < Duration::from_secs(20) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            // Read the head and the body it announces, then answer.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut buffer) {
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = "internal trouble";
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Trouble\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            answered += 1;
        }
        answered
    });
    (url, server)
}

#[test]
fn a_superlink_answering_500_is_an_error_and_503_is_retried_with_a_bound() {
    // 500: an error at once, quoting the SuperLink; no retry.
    let (url, server) = answering(500, 1);
    let fleet = Fleet::new(&url, NodeKey::generate().unwrap(), None, quick()).unwrap();
    let error = fleet.register().unwrap_err().to_string();
    assert!(
        error.contains("answered register-node with HTTP 500")
            && error.contains("internal trouble"),
        "{error}"
    );
    assert_eq!(server.join().unwrap(), 1);
    // 503: retried with back-off, then an error after the bounded number of tries.
    let (url, server) = answering(503, 3);
    let fleet = Fleet::new(&url, NodeKey::generate().unwrap(), None, quick()).unwrap();
    let error = fleet.activate(30.0).unwrap_err().to_string();
    assert!(
        error.contains("did not answer activate-node after 3 tries") && error.contains("503"),
        "{error}"
    );
    assert_eq!(server.join().unwrap(), 3);
}

/// Processes in their own process groups (a node, the flwr CLI), killed on drop.
struct Group(Vec<Child>);

impl Drop for Group {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) on the process group the child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// A command of the venv's (`flwr`) with Flower's environment: the venv first on PATH,
/// FLWR_HOME, no telemetry.
fn flwr(superlink: &SuperLink, program: &str) -> Command {
    let venv = venv();
    let mut command = Command::new(venv.join("bin").join(program));
    command
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("FLWR_HOME", &superlink.home.0)
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1");
    command
}

/// `flwr CLI ARGS` within `limit`: its stdout, or the test fails with its output.
fn flwr_cli(
    superlink: &SuperLink,
    args: &[&str],
    dir: &std::path::Path,
    limit: Duration,
) -> String {
    let mut child = flwr(superlink, "flwr")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = Group(vec![child]);
            panic!("flwr {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "flwr {args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// A file of a run directory as text.
fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// metrics.csv without its wall-time column (the one column that measures, not computes).
fn metrics_without_seconds(dir: &std::path::Path) -> Vec<String> {
    read(dir, "metrics.csv")
        .lines()
        .map(|line| {
            line.rsplit_once(',')
                .map_or(line, |(kept, _)| kept)
                .to_string()
        })
        .collect()
}

/// The contract: a real SuperLink on 127.0.0.1, the dptrain ServerApp, 4
/// `dptrain fl node` processes and 3 rounds of SecAgg+, the node of client 2 dying right
/// after round 1's key sharing. The run completes, and its model, ledger, metrics and
/// privacy statement equal the in-process simulation's (`dptrain federate`, which replays
/// the same failure) bit for bit. Every wait is bounded.
#[test]
fn a_flower_federation_with_a_node_dying_after_key_sharing_equals_the_simulation() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = repo.join("tests/data/flower/contract.toml");
    let dptrain = env!("CARGO_BIN_EXE_dptrain");
    let superlink = SuperLink::start();
    std::fs::write(
        superlink.home.0.join("config.toml"),
        format!(
            "[superlink]\ndefault = \"loopback\"\n[superlink.loopback]\naddress = \
             \"127.0.0.1:{}\"\ninsecure = true\n",
            superlink.port
        ),
    )
    .unwrap();
    // The simulation, replaying the failure from the config's simulated_failures.
    let simulated = superlink.home.0.join("simulated");
    let status = Command::new(dptrain)
        .args(["-q", "federate"])
        .arg(&config)
        .arg("--out")
        .arg(&simulated)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // Four silos; client 2's node aborts right after answering round 1's key sharing.
    let mut nodes = Group(Vec::new());
    for client in 0..4 {
        let log =
            std::fs::File::create(superlink.home.0.join(format!("node{client}.log"))).unwrap();
        let mut node = Command::new(dptrain);
        node.args(["fl", "node", "--superlink", &superlink.url(), "--config"])
            .arg(&config)
            .args([
                "--client",
                &client.to_string(),
                "--once",
                "--heartbeat",
                "10",
            ])
            .args(["--poll", "0.2", "--max-idle", "120"]);
        if client == 2 {
            node.args(["--die-after", "1:shares"]);
        }
        nodes.0.push(
            node.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap(),
        );
    }
    let out = superlink.home.0.join("flower");
    let run_config = format!(
        "dptrain=\"{dptrain}\" config=\"{}\" out=\"{}\" wait-for-nodes=60.0 stage-timeout=60.0",
        config.display(),
        out.display()
    );
    let started = flwr_cli(
        &superlink,
        &[
            "run",
            ".",
            "loopback",
            "--format",
            "json",
            "--run-config",
            &run_config,
        ],
        &repo.join("flower"),
        Duration::from_secs(60),
    );
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let run_id = match &started["run-id"] {
        serde_json::Value::String(id) => id.clone(),
        other => panic!("no run-id in {started} ({other})"),
    };
    // Finished within 3 minutes (about 25 s here: 20 of them waiting for the dead node).
    let start = Instant::now();
    let status = loop {
        let listed = flwr_cli(
            &superlink,
            &["ls", "loopback", "--run-id", &run_id, "--format", "json"],
            &repo,
            Duration::from_secs(30),
        );
        if listed.contains("\"status\": \"finished") {
            break listed;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the run did not finish in 3 minutes: {listed}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs = || {
        let mut text = flwr_cli(
            &superlink,
            &["log", &run_id, "loopback", "--show"],
            &repo,
            Duration::from_secs(30),
        );
        for client in 0..4 {
            text += &read(&superlink.home.0, &format!("node{client}.log"));
        }
        text
    };
    assert!(
        status.contains("finished:completed"),
        "{status}\n{}",
        logs()
    );
    // The dead node died where it was told to (not of anything else).
    let dead = read(&superlink.home.0, "node2.log");
    assert!(
        dead.contains("dying after train.shares of round 1"),
        "{dead}"
    );
    assert!(!dead.contains("train.masked_input"), "{dead}");
    // Bit for bit: the model and the ledger; the metrics but for wall time; the privacy
    // statement and the resolved config.
    let bytes = |dir: &std::path::Path, name: &str| std::fs::read(dir.join(name)).unwrap();
    assert!(
        bytes(&out, "model.safetensors") == bytes(&simulated, "model.safetensors"),
        "the models differ\n{}",
        logs()
    );
    assert_eq!(read(&out, "ledger.csv"), read(&simulated, "ledger.csv"));
    let metrics = metrics_without_seconds(&out);
    assert_eq!(metrics, metrics_without_seconds(&simulated));
    // Every round completed with the 3 survivors.
    assert_eq!(metrics.len(), 4, "{metrics:?}");
    for row in &metrics[1..] {
        assert!(row.starts_with(&format!("{},4,3,", &row[..1])), "{row}");
    }
    assert_eq!(read(&out, "privacy.md"), read(&simulated, "privacy.md"));
    assert_eq!(read(&out, "config.toml"), read(&simulated, "config.toml"));
    // The live nodes left after the run.
    let start = Instant::now();
    for (client, node) in nodes.0.iter_mut().enumerate() {
        while node.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {client} did not leave after the run"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `program ARGS` in `dir`; the test fails with its output if it fails or is missing.
fn tool(program: &str, args: &[&str], dir: &std::path::Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (a Debian package: openssl, openssh-client)"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `child`'s output once it exits, within `limit`, else the test fails.
fn finish_within(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = Group(vec![child]);
            panic!("did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Flower's TLS and SuperNode authentication, which dptrain passes through, set up as
/// docs/flower.md tells an operator to: a CA and a certificate for 127.0.0.1 (openssl), the
/// silo's P-384 key (ssh-keygen, PKCS#8), its public half registered with `flwr supernode
/// register`. The registered key gets in over TLS; a key nobody registered, a node that
/// registers itself and a client that does not trust the CA are refused with errors.
#[test]
fn a_registered_node_reaches_a_superlink_over_tls_and_strangers_are_refused() {
    let dir = tempdir::Dir(std::env::temp_dir().join(format!(
        "dptrain-flwr-tls-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = dir.0.as_path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
    ca.extend(["-subj", "/CN=dptrain test CA"]);
    tool("openssl", &ca, d);
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    tool("openssl", &request, d);
    std::fs::write(d.join("san.cnf"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
        d,
    );
    tool(
        "ssh-keygen",
        &[
            "-q", "-t", "ecdsa", "-b", "384", "-m", "PKCS8", "-N", "", "-f", "silo",
        ],
        d,
    );
    let tls = Tls {
        ca: d.join("ca.crt"),
        certificate: d.join("server.pem"),
        key: d.join("server.key"),
    };
    let superlink = SuperLink::start_with(Some(&tls), true);
    std::fs::write(
        superlink.home.0.join("config.toml"),
        format!(
            "[superlink]\ndefault = \"tls\"\n[superlink.tls]\naddress = \"127.0.0.1:{}\"\n\
             root-certificates = \"{}\"\n",
            superlink.port,
            tls.ca.display()
        ),
    )
    .unwrap();
    flwr_cli(
        &superlink,
        &["supernode", "register", "silo.pub", "tls"],
        d,
        Duration::from_secs(60),
    );
    let url = format!("https://127.0.0.1:{}", superlink.port);
    let ca = std::fs::read(&tls.ca).unwrap();
    let key = std::fs::read_to_string(d.join("silo")).unwrap();
    let fleet = Fleet::new(
        &url,
        NodeKey::from_pkcs8_pem(&key).unwrap(),
        Some(&ca),
        quick(),
    )
    .unwrap();
    assert!(fleet.check_version().unwrap().starts_with("1.42."));
    let node = fleet.activate(30.0).unwrap();
    assert!(fleet.heartbeat(node, 30.0).unwrap());
    assert!(fleet.pull_messages(node).unwrap().messages_list.is_empty());
    fleet.leave(node, false).unwrap();
    // A key the operator did not register: refused, whether it activates or registers.
    let stranger = Fleet::new(&url, NodeKey::generate().unwrap(), Some(&ca), quick()).unwrap();
    let error = stranger.activate(30.0).unwrap_err().to_string();
    assert!(error.contains("activate-node"), "{error}");
    let error = stranger.register().unwrap_err().to_string();
    assert!(error.contains("register-node"), "{error}");
    // Without the CA the SuperLink's certificate is not trusted.
    let untrusting = Fleet::new(&url, NodeKey::generate().unwrap(), None, quick()).unwrap();
    let error = untrusting.check_version().unwrap_err().to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // The node command, end to end with the same files: in, pulls nothing, leaves.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let node = Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .args(["fl", "node", "--superlink", &url, "--root-certificates"])
        .arg(&tls.ca)
        .arg("--auth-key")
        .arg(d.join("silo"))
        .arg("--config")
        .arg(repo.join("tests/data/flower/contract.toml"))
        .args(["--client", "0", "--poll", "0.2", "--max-idle", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let output = finish_within(node, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no message from the SuperLink"), "{stderr}");
}
