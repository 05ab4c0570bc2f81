//! `mpirun -np W dptrain train CONFIG --dist mpi` (feature `mpi`): real MPI ranks, started
//! by OpenMPI's `mpirun` (scripts/test-deps.sh installs it). Every run is bounded in time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dptrain::train::Checkpoint;

/// Each mpirun may take this long before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(300);

/// One MPI job at a time: concurrent jobs on two cores run 10-100x slower.
static ONE_JOB: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dptrain-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `mpirun -np ranks dptrain train configs/quickstart.toml --dist mpi` with `args`, its
/// output in `log`.
fn mpirun(ranks: usize, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new("mpirun");
    command
        .args(["-np", &ranks.to_string()])
        // The CI container runs as root and has two cores; ranks share memory.
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(["--mca", "btl", "self,vader"])
        .arg(env!("CARGO_BIN_EXE_dptrain"))
        .args(["train", "configs/quickstart.toml", "--dist", "mpi"])
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    command.spawn().unwrap_or_else(|e| {
        panic!("mpirun could not start ({e}): install OpenMPI (scripts/test-deps.sh)")
    })
}

/// Waits for `child` at most [`LIMIT`]; kills it and fails past that.
fn finish(mut child: Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: mpirun ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs to the end and checks that mpirun succeeded (its log in the failure message).
fn run(ranks: usize, args: &[&str], log: &Path) {
    let status = finish(mpirun(ranks, args, log), &format!("{ranks} ranks"));
    assert!(
        status.success(),
        "mpirun -np {ranks} {args:?}: {status:?}\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

#[test]
fn two_mpi_ranks_train_the_quickstart_as_one_rank_does_bit_for_bit() {
    let _one_job = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let (one, two) = (scratch("one"), scratch("two"));
    let short = ["--set", "training.epochs=0.25"];
    run(
        1,
        &[&["--out", one.to_str().unwrap()], &short[..]].concat(),
        &one.with_extension("log"),
    );
    run(
        2,
        &[&["--out", two.to_str().unwrap()], &short[..]].concat(),
        &two.with_extension("log"),
    );
    for file in ["model.safetensors", "metrics.csv", "ledger.csv"] {
        assert!(read(&one, file) == read(&two, file), "{file} differs");
    }
    let summary: serde_json::Value = serde_json::from_slice(&read(&two, "summary.json")).unwrap();
    assert_eq!(summary["distributed"]["ranks"], 2);
    assert_eq!(summary["distributed"]["parts"], 8);
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&two);
}

/// The pid of rank `rank` among the children of `mpirun` (from their environment).
fn rank_pid(mpirun: u32, rank: usize) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{mpirun}/task/{mpirun}/children")).ok()?;
    children.split_whitespace().find_map(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes())
            .then(|| pid.parse().ok())?
    })
}

#[test]
fn a_rank_that_dies_stops_the_run_with_its_checkpoint_intact_and_the_run_resumes() {
    let _one_job = ONE_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let (killed, whole) = (scratch("killed"), scratch("whole"));
    // Two epochs: the first one's checkpoint, then one more to kill a rank in (the whole
    // test trains four epochs on two ranks).
    let two = ["--set", "training.epochs=2"];
    let child = mpirun(
        2,
        &[&["--out", killed.to_str().unwrap()], &two[..]].concat(),
        &killed.with_extension("log"),
    );
    let mpirun_pid = child.id();
    // Kill rank 1 as soon as rank 0 has written the first epoch's checkpoint.
    let checkpoint = killed.join(dptrain::train::checkpoint::CHECKPOINT_DIR);
    let start = Instant::now();
    while !checkpoint.exists() {
        assert!(start.elapsed() < LIMIT, "no checkpoint within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(mpirun_pid, 1).expect("rank 1's process");
    let status = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = finish(child, "the run with a killed rank");
    assert!(!status.success(), "mpirun must fail when a rank dies");
    // Rank 0's checkpoint of the first epoch is whole (written atomically) and loads.
    let saved = Checkpoint::load(&killed).unwrap();
    assert!(saved.state.steps > 0);
    assert!(
        !killed.join("model.safetensors").exists(),
        "no report of an unfinished run"
    );
    // Resumed on two ranks, the run ends as the uninterrupted one.
    run(
        2,
        &[&["--resume", killed.to_str().unwrap()], &two[..]].concat(),
        &killed.with_extension("resumed.log"),
    );
    run(
        2,
        &[&["--out", whole.to_str().unwrap()], &two[..]].concat(),
        &whole.with_extension("log"),
    );
    for file in ["model.safetensors", "ledger.csv"] {
        assert!(read(&killed, file) == read(&whole, file), "{file} differs");
    }
    let _ = std::fs::remove_dir_all(&killed);
    let _ = std::fs::remove_dir_all(&whole);
}
