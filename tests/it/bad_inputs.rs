//! The bad-input corpus of tests/data/bad/: every case is a command line with its input
//! files and the message it must print. Each must fail with that message, never panic, and
//! leave no output behind.

use std::path::Path;
use std::process::Command;

#[test]
fn every_bad_input_is_a_clear_error_with_nothing_left_behind() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad");
    let scratch = std::env::temp_dir().join(format!("dptrain-bad-{}", std::process::id()));
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = scratch.join(&name);
        let read = |file: &str| std::fs::read_to_string(case.join(file)).unwrap();
        let (command, expected) = (read("command"), read("expected"));
        let args: Vec<String> = command
            .split_whitespace()
            .map(|a| {
                a.replace("{case}", case.to_str().unwrap())
                    .replace("{out}", out.to_str().unwrap())
            })
            .collect();
        let run = Command::new(env!("CARGO_BIN_EXE_dptrain"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        let problem = if run.status.success() {
            Some("succeeded".to_string())
        } else if stderr.contains("panicked") {
            Some(format!("panicked: {stderr}"))
        } else if !stderr.contains(expected.trim()) {
            Some(format!("expected `{}` in: {stderr}", expected.trim()))
        } else if out.exists() {
            Some("left output behind".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            failures.push(format!("{name}: {problem}"));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
