//! The shipped MNIST: checksums, sizes, the label counts its README publishes, and errors
//! for damaged copies.

use std::path::{Path, PathBuf};

use dptrain::data::mnist::{MNIST_MEAN, MNIST_STD};
use dptrain::data::{MnistConfig, load_mnist};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")
}

fn label_counts(labels: &[u32]) -> Vec<usize> {
    let mut counts = vec![0; 10];
    for &l in labels {
        counts[l as usize] += 1;
    }
    counts
}

#[test]
fn shipped_mnist_matches_its_readme() {
    let mnist = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: true,
        holdout: 0,
        ..MnistConfig::default()
    })
    .unwrap();
    assert_eq!(mnist.train.len(), 60_000);
    assert_eq!(mnist.test.len(), 10_000);
    assert_eq!(mnist.train.feature_shape, [1, 28, 28]);
    // datasets/mnist/README.md.
    assert_eq!(
        label_counts(&mnist.train.labels),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        label_counts(&mnist.test.labels),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // Pixels 0 and 255 map to the ends of the normalised range.
    let (lo, hi) = (
        (0.0 - MNIST_MEAN) / MNIST_STD,
        (1.0 - MNIST_MEAN) / MNIST_STD,
    );
    let min = mnist
        .train
        .features
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min);
    let max = mnist
        .train
        .features
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((min, max), (lo, hi));
}

/// A private copy of the shipped files, to damage.
fn copy_of_mnist(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dptrain-mnist-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// (name, how to damage the copy, verify checksums?, the message expected).
type Damage = (&'static str, fn(&Path), bool, &'static str);

#[test]
fn damaged_copies_are_refused_with_the_file_named() {
    let cases: [Damage; 4] = [
        (
            "checksum",
            |dir| {
                let mut bytes = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), bytes).unwrap();
            },
            true,
            "t10k-labels-idx1-ubyte.gz:contents: SHA-256 mismatch",
        ),
        (
            "truncated",
            |dir| {
                let bytes = std::fs::read(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
                std::fs::write(
                    dir.join("t10k-images-idx3-ubyte.gz"),
                    &bytes[..bytes.len() / 2],
                )
                .unwrap();
            },
            false,
            "t10k-images-idx3-ubyte.gz:gzip stream: cannot decompress",
        ),
        (
            "missing",
            |dir| std::fs::remove_file(dir.join("train-labels-idx1-ubyte.gz")).unwrap(),
            false,
            "train-labels-idx1-ubyte.gz: No such file or directory",
        ),
        (
            "no-sums",
            |dir| std::fs::remove_file(dir.join("SHA256SUMS")).unwrap(),
            true,
            "SHA256SUMS: No such file or directory",
        ),
    ];
    for (tag, damage, verify, expected) in cases {
        let dir = copy_of_mnist(tag);
        damage(&dir);
        let err = load_mnist(&MnistConfig {
            dir: dir.clone(),
            verify_checksums: verify,
            holdout: 0,
            ..MnistConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{tag}: `{err}` lacks `{expected}`");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_holdout_comes_from_the_end_of_the_training_set() {
    let mnist = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: false,
        holdout: 5000,
        ..MnistConfig::default()
    })
    .unwrap();
    assert!(mnist.test_is_holdout);
    assert_eq!((mnist.train.len(), mnist.test.len()), (55_000, 5_000));
    let full = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: false,
        holdout: 0,
        ..MnistConfig::default()
    })
    .unwrap();
    assert_eq!(mnist.test.labels[..], full.train.labels[55_000..]);
    assert_eq!(mnist.test.example(0), full.train.example(55_000));
    // A public validation split comes from the end of what is left for training.
    let split = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: false,
        holdout: 5000,
        validation: 1000,
        validation_public: true,
    })
    .unwrap();
    let validation = split.validation.unwrap();
    assert_eq!((split.train.len(), validation.len()), (54_000, 1_000));
    assert_eq!(validation.labels[..], full.train.labels[54_000..55_000]);
    let undeclared = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: false,
        validation: 1000,
        ..MnistConfig::default()
    });
    assert!(
        undeclared
            .unwrap_err()
            .to_string()
            .contains("data.validation_public"),
    );
    let too_big = load_mnist(&MnistConfig {
        dir: shipped(),
        verify_checksums: false,
        holdout: 60_000,
        ..MnistConfig::default()
    });
    assert!(
        too_big
            .unwrap_err()
            .to_string()
            .contains("invalid data.holdout + data.validation = 60000")
    );
}
