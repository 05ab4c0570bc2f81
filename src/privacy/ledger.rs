//! The event ledger: the history of every private step actually taken.
//!
//! A run's privacy cost is a function of this list alone, so it is what checkpoints and
//! reports save, and ε is always recomputed from it. Consecutive steps with the same
//! (sample_rate, noise_multiplier) are stored as one block. On disk it is a CSV file with
//! the header `sample_rate,noise_multiplier,steps`, one block per row, in order.
//!
//! Steps that also answered adaptive clipping's count query (Andrew et al. 2021) carry its
//! noise multiplier in a fourth column, `count_noise_multiplier`. `noise_multiplier` is then
//! the step's *total* multiplier z: the gradient sum, noised at z_Δ, and the count, noised
//! at z_c, on the same Poisson sample, cost exactly one Gaussian step at z with
//! z⁻² = z_Δ⁻² + z_c⁻² (the two queries together are one Gaussian mechanism with a
//! concatenated output). A reader that ignores that column accounts the right ε.
//!
//! Steps of the secure noise mode (discrete Gaussian noise on a grid) carry
//! `discrete_gaussian` in a `mechanism` column (empty or `gaussian` otherwise). They are
//! accounted at integer Rényi orders only ([`Mechanism`]); a reader that ignores the column
//! would also use fractional orders, whose formula is proven for the continuous Gaussian
//! only.
//!
//! Steps whose sample was not drawn by Poisson sampling ([`super::event::DpEvent::
//! NoAmplification`]) are stored with `sample_rate` 1, the rate they are accounted at, and
//! their nominal rate in a `nominal_sample_rate` column (empty otherwise): a reader that
//! ignores the column still accounts them without amplification.
//!
//! Optional columns may come in any order after the three required ones; each is written
//! only when some row needs it, so a fast run's ledger keeps the plain format, and every
//! older ledger reads unchanged. The ledger is the normal form of an event tree
//! ([`super::event`]): [`Ledger::to_event`] and [`Ledger::push_event`] convert.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rdp::check_step;
use crate::error::{Error, Result};

/// The CSV header of a ledger file.
pub const LEDGER_HEADER: [&str; 3] = ["sample_rate", "noise_multiplier", "steps"];

/// An optional column: the count query's noise multiplier, empty when none.
pub const COUNT_COLUMN: &str = "count_noise_multiplier";

/// An optional column: the noise distribution of the step ([`Mechanism`]), empty for the
/// Gaussian.
pub const MECHANISM_COLUMN: &str = "mechanism";

/// An optional column: the nominal sample rate of steps accounted without amplification
/// (their `sample_rate` is 1), empty for Poisson-sampled steps.
pub const NOMINAL_RATE_COLUMN: &str = "nominal_sample_rate";

/// The noise distribution of a step, which decides the Rényi orders it is accounted at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Continuous Gaussian noise (fast mode): every order, fractional ones included
    /// (Mironov, Talwar & Zhang 2019).
    #[default]
    Gaussian,
    /// Discrete Gaussian noise on a grid (secure mode, Canonne, Kamath & Steinke 2020):
    /// integer orders only, where the sampled Gaussian's formula is a proven bound for it
    /// too (see `privacy::rdp::discrete` for the proof).
    DiscreteGaussian,
}

impl Mechanism {
    /// The name used in ledgers and configs.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Gaussian => "gaussian",
            Mechanism::DiscreteGaussian => "discrete_gaussian",
        }
    }

    fn is_gaussian(&self) -> bool {
        *self == Mechanism::Gaussian
    }
}

/// `steps` repetitions of one Poisson-subsampled Gaussian step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyEvent {
    /// Poisson sampling probability q ∈ (0, 1].
    pub sample_rate: f64,
    /// Noise standard deviation over the clip norm, σ > 0.
    pub noise_multiplier: f64,
    /// How many times the step is repeated, at least 1.
    pub steps: u64,
    /// The noise multiplier z_c of a count query answered with the same sample (adaptive
    /// clipping), already included in `noise_multiplier` (see the module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_noise_multiplier: Option<f64>,
    /// The noise distribution (the Gaussian unless the run used secure noise).
    #[serde(default, skip_serializing_if = "Mechanism::is_gaussian")]
    pub mechanism: Mechanism,
    /// Set when the steps' sample was not drawn by Poisson sampling: the rate it was drawn
    /// at, for the report. `sample_rate` is then 1, the rate the steps are accounted at (no
    /// amplification by sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nominal_sample_rate: Option<f64>,
}

impl PrivacyEvent {
    /// A validated block of steps.
    pub fn new(sample_rate: f64, noise_multiplier: f64, steps: u64) -> Result<Self> {
        check_step(sample_rate, noise_multiplier)?;
        if steps == 0 {
            return Err(Error::invalid("steps", steps, "a whole number at least 1"));
        }
        Ok(PrivacyEvent {
            sample_rate,
            noise_multiplier,
            steps,
            count_noise_multiplier: None,
            mechanism: Mechanism::Gaussian,
            nominal_sample_rate: None,
        })
    }

    /// The same steps accounted without amplification by sampling: at sample rate 1, the
    /// nominal rate kept beside it (a sample drawn otherwise than by Poisson sampling).
    pub fn without_amplification(self) -> Self {
        PrivacyEvent {
            sample_rate: 1.0,
            nominal_sample_rate: Some(self.nominal_sample_rate.unwrap_or(self.sample_rate)),
            ..self
        }
    }

    /// True when the steps are accounted with amplification by Poisson sampling.
    pub fn is_amplified(&self) -> bool {
        self.nominal_sample_rate.is_none()
    }

    /// The same step repeated `times` times as often; errors if the count overflows.
    pub fn repeated(self, times: u64) -> Result<Self> {
        let steps = self.steps.checked_mul(times).ok_or_else(|| {
            Error::invalid(
                "steps",
                format!("{} × {times}", self.steps),
                "a number of steps that fits in 64 bits",
            )
        })?;
        Ok(PrivacyEvent { steps, ..self })
    }

    /// The same steps with noise drawn from `mechanism`.
    pub fn with_mechanism(self, mechanism: Mechanism) -> Self {
        PrivacyEvent { mechanism, ..self }
    }

    /// The same steps, recorded as also answering a count query at noise multiplier
    /// `count` (it must exceed the total multiplier: the gradient's share is what is left).
    pub fn with_count_query(self, count: f64) -> Result<Self> {
        if !(count > self.noise_multiplier && count.is_finite()) {
            return Err(Error::invalid(
                COUNT_COLUMN,
                count,
                format!(
                    "a finite number above the total noise multiplier {}",
                    self.noise_multiplier
                ),
            ));
        }
        Ok(PrivacyEvent {
            count_noise_multiplier: Some(count),
            ..self
        })
    }

    /// The gradient sum's own noise multiplier z_Δ = (z⁻² − z_c⁻²)^(−1/2) (design.md
    /// section 5; Andrew et al. 2021, Thm. 1), or z when there is no count query.
    pub fn gradient_noise_multiplier(&self) -> f64 {
        match self.count_noise_multiplier {
            Some(count) => (self.noise_multiplier.powi(-2) - count.powi(-2)).powf(-0.5),
            None => self.noise_multiplier,
        }
    }

    /// The block of `epochs` passes over a data set of `dataset_size` examples with
    /// expected batch size `batch_size`: q = B/N and steps = ⌈E·N/B⌉.
    pub fn from_epochs(
        epochs: f64,
        dataset_size: u64,
        batch_size: u64,
        noise_multiplier: f64,
    ) -> Result<Self> {
        let (sample_rate, steps) = epochs_to_steps(epochs, dataset_size, batch_size)?;
        PrivacyEvent::new(sample_rate, noise_multiplier, steps)
    }

    /// True when both blocks repeat the same (q, σ), bit for bit.
    pub fn same_step(&self, other: &PrivacyEvent) -> bool {
        self.sample_rate.to_bits() == other.sample_rate.to_bits()
            && self.noise_multiplier.to_bits() == other.noise_multiplier.to_bits()
            && self.count_noise_multiplier.map(f64::to_bits)
                == other.count_noise_multiplier.map(f64::to_bits)
            && self.mechanism == other.mechanism
            && self.nominal_sample_rate.map(f64::to_bits)
                == other.nominal_sample_rate.map(f64::to_bits)
    }
}

/// Converts epochs to (sample_rate, steps): q = B/N, steps = ⌈E·N/B⌉ (an exact whole number
/// of steps is not rounded up by floating-point noise).
pub fn epochs_to_steps(epochs: f64, dataset_size: u64, batch_size: u64) -> Result<(f64, u64)> {
    if dataset_size == 0 {
        return Err(Error::invalid(
            "dataset_size",
            dataset_size,
            "a whole number at least 1",
        ));
    }
    if batch_size == 0 || batch_size > dataset_size {
        return Err(Error::invalid(
            "batch_size",
            batch_size,
            format!("a whole number from 1 to the dataset size ({dataset_size})"),
        ));
    }
    if !(epochs > 0.0 && epochs.is_finite()) {
        return Err(Error::invalid("epochs", epochs, "a finite number above 0"));
    }
    let exact = epochs * dataset_size as f64 / batch_size as f64;
    let nearest = exact.round();
    let steps = if (exact - nearest).abs() <= 1e-9 * nearest.max(1.0) {
        nearest
    } else {
        exact.ceil()
    };
    if steps > u64::MAX as f64 / 2.0 {
        return Err(Error::invalid(
            "epochs",
            epochs,
            "few enough epochs for the step count to fit in 64 bits",
        ));
    }
    Ok((
        batch_size as f64 / dataset_size as f64,
        (steps as u64).max(1),
    ))
}

/// The ordered history of privacy events, with equal consecutive steps merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    events: Vec<PrivacyEvent>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Appends a block, merging it into the last one when the step is the same.
    pub fn push(&mut self, event: PrivacyEvent) {
        match self.events.last_mut() {
            Some(last) if last.same_step(&event) => last.steps += event.steps,
            _ => self.events.push(event),
        }
    }

    /// Appends every block of `other`, in order.
    pub fn extend(&mut self, other: &Ledger) {
        for &event in &other.events {
            self.push(event);
        }
    }

    /// The blocks, in order.
    pub fn events(&self) -> &[PrivacyEvent] {
        &self.events
    }

    /// The number of steps in all blocks.
    pub fn steps(&self) -> u64 {
        self.events.iter().map(|e| e.steps).sum()
    }

    /// True when no step has been recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Reads a ledger CSV file; errors name the file, line and column.
    pub fn read_csv(path: &Path) -> Result<Ledger> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ledger::parse_csv(&bytes, path)
    }

    /// Parses ledger CSV text; `path` is only used in error messages.
    pub fn parse_csv(bytes: &[u8], path: &Path) -> Result<Ledger> {
        let parse_error = |location: String, message: String| Error::Parse {
            path: path.to_path_buf(),
            location,
            message,
        };
        let expected_header = LEDGER_HEADER.join(",");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(bytes);
        let header = reader
            .headers()
            .map_err(|e| parse_error("line 1".into(), e.to_string()))?
            .clone();
        let columns: Vec<&str> = header.iter().collect();
        // Optional columns after the required three, each at most once, in any order.
        let optional = |name: &str| columns.iter().skip(3).position(|c| *c == name);
        let (count_at, mechanism_at) = (optional(COUNT_COLUMN), optional(MECHANISM_COLUMN));
        let nominal_at = optional(NOMINAL_RATE_COLUMN);
        let known_extras = usize::from(count_at.is_some())
            + usize::from(mechanism_at.is_some())
            + usize::from(nominal_at.is_some());
        let duplicated = columns
            .iter()
            .skip(3)
            .enumerate()
            .any(|(i, c)| columns.iter().skip(3).take(i).any(|earlier| earlier == c));
        if columns[..columns.len().min(3)] != LEDGER_HEADER
            || columns.len() != 3 + known_extras
            || duplicated
        {
            let found = header.iter().collect::<Vec<_>>().join(",");
            let found = if found.is_empty() {
                "an empty file".to_string()
            } else {
                format!("header `{found}`")
            };
            return Err(parse_error(
                "line 1".into(),
                format!(
                    "expected the header `{expected_header}` (optionally followed by \
                     `{COUNT_COLUMN}`, `{MECHANISM_COLUMN}` and `{NOMINAL_RATE_COLUMN}`), \
                     found {found}"
                ),
            ));
        }
        let mut ledger = Ledger::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths { len, .. } => format!(
                        "expected {} fields ({}), found {len}",
                        columns.len(),
                        columns.join(",")
                    ),
                    _ => e.to_string(),
                };
                parse_error(format!("line {line}"), message)
            })?;
            let line = record.position().map_or(0, |p| p.line());
            let field = |column: usize| {
                let at = format!(
                    "line {line}, column {} ({})",
                    column + 1,
                    LEDGER_HEADER[column]
                );
                (record.get(column).unwrap_or(""), at)
            };
            let number = |column: usize| -> Result<f64> {
                let (text, at) = field(column);
                text.parse::<f64>()
                    .map_err(|_| parse_error(at, format!("expected a number, found `{text}`")))
            };
            let sample_rate = number(0)?;
            let noise_multiplier = number(1)?;
            let (steps_text, steps_at) = field(2);
            let steps = steps_text.parse::<u64>().map_err(|_| {
                parse_error(
                    steps_at.clone(),
                    format!("expected a whole number of steps, found `{steps_text}`"),
                )
            })?;
            let count = match count_at.map(|i| i + 3) {
                Some(column) => {
                    let text = record.get(column).unwrap_or("");
                    let at = format!("line {line}, column {} ({COUNT_COLUMN})", column + 1);
                    match text {
                        "" => None,
                        _ => Some(text.parse::<f64>().map_err(|_| {
                            parse_error(at, format!("expected a number or nothing, found `{text}`"))
                        })?),
                    }
                }
                None => None,
            };
            let mechanism = match mechanism_at.map(|i| i + 3) {
                Some(column) => match record.get(column).unwrap_or("") {
                    "" | "gaussian" => Mechanism::Gaussian,
                    "discrete_gaussian" => Mechanism::DiscreteGaussian,
                    text => {
                        return Err(parse_error(
                            format!("line {line}, column {} ({MECHANISM_COLUMN})", column + 1),
                            format!(
                                "expected `gaussian`, `discrete_gaussian` or nothing, found \
                                 `{text}`"
                            ),
                        ));
                    }
                },
                None => Mechanism::Gaussian,
            };
            let nominal = match nominal_at.map(|i| i + 3) {
                Some(column) => {
                    let text = record.get(column).unwrap_or("");
                    let at = format!("line {line}, column {} ({NOMINAL_RATE_COLUMN})", column + 1);
                    match text {
                        "" => None,
                        _ => {
                            let rate = text.parse::<f64>().ok().filter(|q| *q > 0.0 && *q <= 1.0);
                            if rate.is_none() || sample_rate != 1.0 {
                                return Err(parse_error(
                                    at,
                                    format!(
                                        "expected a rate in (0, 1] or nothing, on a row with \
                                         sample_rate 1 (steps without amplification are \
                                         accounted at rate 1), found `{text}` with \
                                         sample_rate {sample_rate}"
                                    ),
                                ));
                            }
                            rate
                        }
                    }
                }
                None => None,
            };
            let event = PrivacyEvent::new(sample_rate, noise_multiplier, steps).map_err(|e| {
                let column = match &e {
                    Error::InvalidParameter { name, .. } => {
                        LEDGER_HEADER.iter().position(|c| c == name).unwrap_or(2)
                    }
                    _ => 2,
                };
                parse_error(field(column).1, e.to_string())
            })?;
            let event = match count {
                Some(count) => event.with_count_query(count).map_err(|e| {
                    parse_error(
                        format!(
                            "line {line}, column {} ({COUNT_COLUMN})",
                            count_at.unwrap_or(0) + 4
                        ),
                        e.to_string(),
                    )
                })?,
                None => event,
            };
            let event = event.with_mechanism(mechanism);
            ledger.push(PrivacyEvent {
                nominal_sample_rate: nominal,
                ..event
            });
        }
        if ledger.is_empty() {
            return Err(parse_error(
                "line 2".into(),
                "no events: expected at least one row after the header".into(),
            ));
        }
        Ok(ledger)
    }

    /// The ledger as CSV text (floats written so they read back bit for bit).
    /// The optional columns appear only when some step needs them.
    pub fn to_csv(&self) -> String {
        let counts = self
            .events
            .iter()
            .any(|e| e.count_noise_multiplier.is_some());
        let mechanisms = self.events.iter().any(|e| !e.mechanism.is_gaussian());
        let nominal = self.events.iter().any(|e| !e.is_amplified());
        let mut out = LEDGER_HEADER.join(",");
        if counts {
            out.push(',');
            out.push_str(COUNT_COLUMN);
        }
        if mechanisms {
            out.push(',');
            out.push_str(MECHANISM_COLUMN);
        }
        if nominal {
            out.push(',');
            out.push_str(NOMINAL_RATE_COLUMN);
        }
        out.push('\n');
        for e in &self.events {
            out.push_str(&format!(
                "{:?},{:?},{}",
                e.sample_rate, e.noise_multiplier, e.steps
            ));
            if counts {
                out.push(',');
                if let Some(count) = e.count_noise_multiplier {
                    out.push_str(&format!("{count:?}"));
                }
            }
            if mechanisms {
                out.push(',');
                out.push_str(e.mechanism.name());
            }
            if nominal {
                out.push(',');
                if let Some(rate) = e.nominal_sample_rate {
                    out.push_str(&format!("{rate:?}"));
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the ledger CSV atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        crate::fs::write_atomic(path, self.to_csv().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ledger> {
        Ledger::parse_csv(text.as_bytes(), Path::new("events.csv"))
    }

    #[test]
    fn push_merges_equal_consecutive_steps_only() {
        let mut ledger = Ledger::new();
        let a = PrivacyEvent::new(0.01, 1.0, 3).unwrap();
        let b = PrivacyEvent::new(0.01, 2.0, 1).unwrap();
        ledger.push(a);
        ledger.push(a);
        ledger.push(b);
        ledger.push(a);
        assert_eq!(ledger.events().len(), 3);
        assert_eq!(ledger.events()[0].steps, 6);
        assert_eq!(ledger.steps(), 10);
    }

    #[test]
    fn csv_round_trips_bit_for_bit() {
        let mut ledger = Ledger::new();
        ledger.push(PrivacyEvent::new(256.0 / 60000.0, 1.1, 14063).unwrap());
        ledger.push(PrivacyEvent::new(0.1, 1.5 * 0.999f64.powf(7.0), 1).unwrap());
        let back = parse(&ledger.to_csv()).unwrap();
        assert_eq!(back, ledger);
        // With both optional columns, and with them in the other order.
        let secure = PrivacyEvent::new(0.1, 2.0, 3)
            .unwrap()
            .with_mechanism(Mechanism::DiscreteGaussian);
        ledger.push(secure);
        ledger.push(
            PrivacyEvent::new(0.1, 2.0, 1)
                .unwrap()
                .with_count_query(9.0)
                .unwrap(),
        );
        let text = ledger.to_csv();
        assert!(
            text.starts_with(
                "sample_rate,noise_multiplier,steps,count_noise_multiplier,mechanism\n"
            )
        );
        assert_eq!(parse(&text).unwrap(), ledger);
        let swapped = "sample_rate,noise_multiplier,steps,mechanism,count_noise_multiplier\n\
                       0.1,2.0,3,discrete_gaussian,\n";
        assert_eq!(parse(swapped).unwrap().events()[0], secure);
        // A discrete step is not merged with a Gaussian one of the same (q, σ).
        assert_eq!(ledger.events().len(), 4);
        // Steps without amplification: rate 1, the nominal rate in its own column.
        ledger.push(
            PrivacyEvent::new(0.05, 1.0, 2)
                .unwrap()
                .without_amplification(),
        );
        let text = ledger.to_csv();
        assert!(
            text.lines()
                .last()
                .unwrap()
                .ends_with(",1.0,2,,gaussian,0.05"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), ledger);
    }

    #[test]
    fn epochs_become_exact_step_counts() {
        assert_eq!(
            epochs_to_steps(60.0, 60000, 256).unwrap(),
            (256.0 / 60000.0, 14063)
        );
        // 1 epoch of 60000 in batches of 250 is exactly 240 steps, not 241.
        assert_eq!(epochs_to_steps(1.0, 60000, 250).unwrap().1, 240);
        assert_eq!(epochs_to_steps(0.5, 100, 10).unwrap().1, 5);
        assert!(epochs_to_steps(1.0, 100, 0).is_err());
        assert!(epochs_to_steps(1.0, 100, 101).is_err());
        assert!(epochs_to_steps(0.0, 100, 10).is_err());
        assert!(epochs_to_steps(1.0, 0, 10).is_err());
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let cases = [
            (
                "q,sigma,steps\n0.1,1,1\n",
                "events.csv:line 1: expected the header",
            ),
            ("", "found an empty file"),
            ("sample_rate,noise_multiplier,steps\n", "no events"),
            (
                "sample_rate,noise_multiplier,steps\n0.1,1.0,10\n0.1,abc,10\n",
                "line 3, column 2 (noise_multiplier): expected a number, found `abc`",
            ),
            (
                "sample_rate,noise_multiplier,steps\n1.5,1.0,10\n",
                "line 2, column 1 (sample_rate): invalid sample_rate = 1.5",
            ),
            (
                "sample_rate,noise_multiplier,steps\n0.1,1.0,0\n",
                "line 2, column 3 (steps): invalid steps = 0",
            ),
            (
                "sample_rate,noise_multiplier,steps\n0.1,1.0,2.5\n",
                "line 2, column 3 (steps): expected a whole number of steps, found `2.5`",
            ),
            (
                "sample_rate,noise_multiplier,steps\n0.1,1.0\n",
                "line 2: expected 3 fields",
            ),
            (
                "sample_rate,noise_multiplier,steps,mechanism\n0.1,1,4,laplace\n",
                "line 2, column 4 (mechanism): expected `gaussian`, `discrete_gaussian`",
            ),
            (
                "sample_rate,noise_multiplier,steps,mechanism,mechanism\n0.1,1,4,,\n",
                "line 1: expected the header",
            ),
            (
                "sample_rate,noise_multiplier,steps,nominal_sample_rate\n0.1,1,4,0.1\n",
                "line 2, column 4 (nominal_sample_rate): expected a rate in (0, 1] or nothing, \
                 on a row with sample_rate 1",
            ),
            (
                "sample_rate,noise_multiplier,steps,nominal_sample_rate\n1,1,4,2\n",
                "column 4 (nominal_sample_rate): expected a rate in (0, 1]",
            ),
            (
                "sample_rate,noise_multiplier,steps\n0.1,-1,4\n",
                "line 2, column 2 (noise_multiplier): invalid noise_multiplier = -1",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{text:?}: `{err}` lacks `{expected}`"
            );
        }
    }
}
