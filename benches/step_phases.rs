//! Where one DP-SGD step's time goes: the phases of a step (forward, backward, per-example
//! norms, clipped sums, noise) and the single ops of the forward pass, at the shapes of
//! `dptrain bench` (MNIST, batch 256).
//!
//!   cargo bench --bench step_phases -- [logreg|mlp|cnn|CONFIG.toml] [REPEATS]
//!
//! Prints the median milliseconds of each phase over REPEATS (default 30) runs, after one
//! untimed warm-up. This is a profiling aid, not a comparison: the comparison with Opacus
//! is `scripts/bench-opacus.sh`.

use std::hint::black_box;
use std::time::Instant;

use candle_core::Tensor;
use dptrain::data::{MnistConfig, load_mnist};
use dptrain::grad_sample::im2col::{ConvGeometry, im2col};
use dptrain::mechanism::GaussianNoise;
use dptrain::model::{Model, ModelConfig, ModelKind, dataset_batch, pool, tanh};

fn median_ms(repeats: usize, mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn report(name: &str, ms: f64) {
    println!("{name:<34} {ms:>9.3} ms");
}

/// The binary's allocator (`runtime::configure_process`), so that phases time as in a run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> dptrain::error::Result<()> {
    // SAFETY: the first statement of main; no other thread exists yet.
    unsafe { dptrain::runtime::configure_process() };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let kind = match args.first().map(String::as_str) {
        Some("logreg") => ModelKind::Logreg,
        Some("mlp") => ModelKind::Mlp,
        _ => ModelKind::Cnn,
    };
    let repeats: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(30);
    // A run config instead of a shipped model: its model on its data (configs/bench/).
    let config_path = args.first().filter(|a| a.ends_with(".toml"));
    let (data, config, name) = match config_path {
        Some(path) => {
            let run = dptrain::config::RunConfig::load(std::path::Path::new(path), &[])?;
            (run.data.load()?.train, run.model, run.name)
        }
        None => (
            load_mnist(&MnistConfig::default())?.train,
            ModelConfig::preset(kind),
            format!("{kind:?}"),
        ),
    };
    let model = Model::for_data(&config, &data, 0)?;
    let indices: Vec<usize> = (0..256).map(|i| (i * 7919) % data.len()).collect();
    let (x, _) = dataset_batch(&data, &indices)?;
    println!("{name}, batch 256, median of {repeats}");

    report(
        "batch tensors",
        median_ms(repeats, || {
            black_box(dataset_batch(&data, &indices).unwrap());
        }),
    );
    report(
        "forward (autograd, evaluation)",
        median_ms(repeats, || {
            black_box(model.forward(&x).unwrap());
        }),
    );
    let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i]).collect();
    report(
        "training pass (forward + backward)",
        median_ms(repeats, || {
            black_box(model.training_pass(&x, &labels).unwrap());
        }),
    );
    let traces = model.training_pass(&x, &labels)?.traces;
    let layers = model.trainable_layers();
    let factors = vec![0.5f64; 256];
    for (node, trace) in layers.iter().zip(&traces) {
        let path = &node.path;
        report(
            &format!("{path}: per-example norms"),
            median_ms(repeats, || {
                black_box(node.layer.per_example(trace, node.norm).unwrap());
            }),
        );
        let pe = node.layer.per_example(trace, node.norm)?;
        report(
            &format!("{path}: clipped sums"),
            median_ms(repeats, || {
                black_box(node.layer.clipped_sums(trace, Some(&pe), &factors).unwrap());
            }),
        );
    }
    let params = model.parameter_count();
    let mut noise = GaussianNoise::new(1.0, 0)?;
    let mut buffer = vec![0f32; params];
    report(
        &format!("noise ({params} values)"),
        median_ms(repeats, || noise.add_to(&mut buffer)),
    );
    // The exact discrete Gaussian (issue 6's secure mode), one thread, σ = 2 on a grid of
    // C/2^20: σ² = 4·2^40 in grid units.
    {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
        let sigma2: u128 = 4 << 40;
        report(
            &format!("discrete Gaussian ({params} values, 1 thread)"),
            median_ms(repeats.min(5), || {
                for _ in 0..params {
                    black_box(
                        dptrain::mechanism::discrete_gaussian::sample(&mut rng, sigma2).unwrap(),
                    );
                }
            }),
        );
    }

    if config_path.is_none() && kind == ModelKind::Cnn {
        let conv1 = ConvGeometry {
            kernel: (8, 8),
            stride: 2,
            padding: (3, 3),
            dilation: 1,
        };
        report(
            "op: im2col conv1",
            median_ms(repeats, || {
                black_box(im2col(&x, conv1).unwrap());
            }),
        );
        let h = Tensor::randn(0f32, 1.0, (256, 16, 14, 14), &candle_core::Device::Cpu)?;
        report(
            "op: tanh (256,16,14,14)",
            median_ms(repeats, || {
                black_box(tanh::tanh(&h).unwrap());
            }),
        );
        report(
            "op: max pool (256,16,14,14)",
            median_ms(repeats, || {
                black_box(pool::max_pool_2_stride_1(&h).unwrap());
            }),
        );
        let bias = Tensor::randn(0f32, 1.0, 16, &candle_core::Device::Cpu)?;
        let y1 = Tensor::randn(0f32, 1.0, (256, 196, 16), &candle_core::Device::Cpu)?;
        report(
            "op: bias add (256,196,16)",
            median_ms(repeats, || {
                black_box(y1.broadcast_add(&bias).unwrap());
            }),
        );
        report(
            "op: transpose+reshape conv1 out",
            median_ms(repeats, || {
                black_box(
                    y1.transpose(1, 2)
                        .unwrap()
                        .reshape((256, 16, 14, 14))
                        .unwrap(),
                );
            }),
        );
    }
    Ok(())
}
