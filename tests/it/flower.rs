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
    _home: tempdir::Dir,
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

impl SuperLink {
    fn start() -> SuperLink {
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
        let child = Command::new(&binary)
            .args([
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--disable-runtime-dependency-installation")
            .env("PATH", path)
            .env("FLWR_HOME", &home)
            .env("FLWR_TELEMETRY_ENABLED", "0")
            .env("FLWR_DISABLE_UPDATE_CHECK", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let superlink = SuperLink {
            child,
            port,
            _home: tempdir::Dir(home.clone()),
        };
        // Healthy within 60 s (about 2 s here), or the test fails with the log.
        let start = Instant::now();
        while !healthy(port) {
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
