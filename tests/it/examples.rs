//! The `examples/` programs, one per tier of the library API, run as CI runs them: each
//! must exit successfully (each checks that its model learned its planted signal).

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, which `cargo test` builds before running tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/it-*");
    profile.join("examples").join(name)
}

fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} was not built", path.display());
    let out = Command::new(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_config_tier_example_trains_its_model() {
    let out = run("config_model");
    assert!(
        out.contains("3.basic.0.conv2d") && out.contains("test accuracy"),
        "{out}"
    );
}

#[test]
fn the_builder_tier_example_trains_its_model() {
    let out = run("builder_model");
    assert!(
        out.contains("embedding_bag") && out.contains("test accuracy"),
        "{out}"
    );
}

#[test]
fn the_candle_tier_example_trains_its_model_and_refuses_a_foreign_parameter() {
    let out = run("candle_model");
    assert!(
        out.contains("refused:") && out.contains("`plain_head.") && out.contains("test accuracy"),
        "{out}"
    );
}
