//! The dependency direction of docs/style.md, enforced: a room imports only rooms of its
//! own layer or lower ones, and the privacy-critical rooms never touch tensors.

use std::path::{Path, PathBuf};

/// Layer of each top-level room (docs/style.md). A room missing here fails the test, so a
/// new room must be placed deliberately.
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("fs", 0),
    ("runtime", 0),
    ("real", 0),
    ("privacy", 1),
    ("schedule", 1),
    ("sampling", 1),
    ("secagg", 1),
    ("mpc", 1),
    ("he", 1),
    ("data", 2),
    ("mechanism", 2),
    ("grad_sample", 2),
    ("model", 2),
    ("train", 3),
    ("audit", 3),
    ("federated", 3),
    ("report", 4),
    ("config", 4),
    ("cli", 5),
];

/// Rooms that must not use candle: the accountant's side of the privacy claim.
const NO_TENSORS: &[&str] = &[
    "error", "fs", "privacy", "schedule", "sampling", "secagg", "mpc", "he",
];

fn layer(room: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == room)
        .unwrap_or_else(|| panic!("room `{room}` has no layer in tests/it/architecture.rs"))
        .1
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level room a source file belongs to (`src/privacy/rdp.rs` → `privacy`).
fn room_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let room = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(room, "lib" | "main")).then(|| room.to_string())
}

/// Every `crate::<room>` mentioned in the text.
fn crate_references(text: &str) -> Vec<String> {
    text.match_indices("crate::")
        .filter_map(|(at, _)| {
            let rest = &text[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && name.chars().next().unwrap().is_lowercase()).then_some(name)
        })
        .collect()
}

#[test]
fn rooms_import_only_their_layer_or_lower() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(room) = room_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in crate_references(&text) {
            if used != room && layer(&used) > layer(&room) {
                violations.push(format!(
                    "{}: `{room}` (layer {}) uses `crate::{used}` (layer {})",
                    file.display(),
                    layer(&room),
                    layer(&used)
                ));
            }
        }
        if NO_TENSORS.contains(&room.as_str()) && text.contains("candle") {
            violations.push(format!("{}: `{room}` must not use candle", file.display()));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(files.len() > 5, "scanned {} files", files.len());
}

#[test]
fn the_numerics_of_privacy_stand_alone() {
    // privacy::numerics is layer 0: it uses nothing of the crate.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/privacy/numerics.rs"),
    )
    .unwrap();
    assert!(!text.contains("crate::") && !text.contains("super::super"));
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("use super::") && !l.contains("super::*"))
    );
}

#[test]
fn the_reference_check_sees_crate_paths() {
    // The scanner itself must find what it is meant to forbid.
    assert_eq!(
        crate_references("use crate::cli::run; crate::privacy::Ledger"),
        ["cli", "privacy"]
    );
}
