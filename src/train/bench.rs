//! Training-step throughput, private against non-private, on fixed batches (the method of
//! ../bench/opacus/bench_throughput.py: contiguous batches of a fixed shuffle, warm-up steps
//! untimed, the optimizer step included).

use std::time::Instant;

use super::inner::OptimizerConfig;
use super::optimizer::{DpOptimizer, DpSettings, NoiseMode};
use crate::data::Dataset;
use crate::error::Result;
use crate::mechanism::ClippingConfig;
use crate::model::{Model, ModelConfig};

/// Samples per second of both modes, medians over interleaved repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Plain SGD steps (same code path, no clipping or noise).
    pub nonprivate_samples_per_sec: f64,
    /// DP-SGD steps (per-example norms, clipping, noise σ = 1, C = 1), fast noise.
    pub private_samples_per_sec: f64,
    /// The same DP-SGD steps with secure noise (discrete Gaussian on a grid from an
    /// OS-seeded CSPRNG), when asked for.
    pub secure_samples_per_sec: Option<f64>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How long each measurement runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchLength {
    /// At least this many timed steps.
    pub steps: usize,
    /// And at least this many seconds (as ../bench/opacus does: a 0.5 ms step timed 30
    /// times is too short to measure on a shared machine).
    pub min_seconds: f64,
    /// Interleaved repeats of every mode (medians are reported).
    pub repeats: usize,
    /// Also time the secure noise mode.
    pub secure: bool,
}

/// Times steps of batch `batch_size` in each mode, `length.repeats` times interleaved,
/// after 5 warm-up steps per measurement.
pub fn throughput(
    model_config: &ModelConfig,
    data: &Dataset,
    batch_size: usize,
    length: BenchLength,
) -> Result<Throughput> {
    let BenchLength {
        steps,
        min_seconds,
        repeats,
        secure,
    } = length;
    let batches: Vec<Vec<usize>> = (0..steps.max(50) + 5)
        .map(|s| {
            (0..batch_size)
                .map(|i| (s * batch_size + i * 7919) % data.len())
                .collect()
        })
        .collect();
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    // (slot in `rates`, private, noise): non-private, fast DP, and secure DP when asked.
    let mut modes = vec![
        (0, false, NoiseMode::Seeded(0)),
        (1, true, NoiseMode::Seeded(0)),
    ];
    if secure {
        modes.push((2, true, NoiseMode::Secure));
    }
    for _ in 0..repeats.max(1) {
        for &(slot, private, noise) in &modes {
            let model = Model::for_data(model_config, data, 0)?;
            let mut optimizer = DpOptimizer::new(
                &model,
                DpSettings {
                    optimizer: OptimizerConfig::Sgd {
                        learning_rate: 0.05,
                        momentum: 0.0,
                    },
                    clipping: ClippingConfig::default(),
                    noise_multiplier: 1.0,
                    expected_batch_size: batch_size as f64,
                    max_physical_batch: batch_size,
                    private,
                    noise,
                },
            )?;
            for batch in &batches[..5] {
                optimizer.step(&model, data, batch)?;
            }
            let start = Instant::now();
            let mut taken = 0;
            while taken < steps || start.elapsed().as_secs_f64() < min_seconds {
                let batch = &batches[5 + taken % (batches.len() - 5)];
                optimizer.step(&model, data, batch)?;
                taken += 1;
            }
            rates[slot].push((taken * batch_size) as f64 / start.elapsed().as_secs_f64());
        }
    }
    let [nonprivate, private, secure_rates] = rates;
    Ok(Throughput {
        nonprivate_samples_per_sec: median(nonprivate),
        private_samples_per_sec: median(private),
        secure_samples_per_sec: secure.then(|| median(secure_rates)),
    })
}
