//! `dptrain._dptrain`, the compiled half of dptrain's Python package: the RDP, PLD and PRV
//! accountants, ledgers, calibration, dp_accounting's event trees and training, over the
//! dptrain crate.
//!
//! The Python modules (`python/dptrain/`) give these their friendly signatures. Every number
//! that reaches the crate is checked here only for its Python type (a bool, a string or None
//! where a number belongs is a `TypeError`); its value is checked by the crate, so a bad
//! value raises `ValueError` with the command line's message, word for word.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use dptrain::cli::{self, AccountantKind, ConversionKind, GridArgs, Output};
use dptrain::privacy::{DpEvent, PrivacyEvent};
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyOverflowError, PyRuntimeError,
    PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};

/// mimalloc, as in the `dptrain` binary: training allocates and frees the same large
/// buffers every step (`dptrain::runtime`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The deepest dp_accounting event tree read: deeper trees would overflow the stack of the
/// recursive reader and of the crate's normal form.
const MAX_EVENT_DEPTH: usize = 200;

/// δ at ε is a PLD or RDP question.
const PRV_HAS_NO_DELTA: &str =
    "delta() at a given epsilon works with accountant 'rdp' or 'pld'; PRV gives epsilon only";

/// A dptrain error as the Python exception a caller expects, with the command line's text.
fn py_err(err: dptrain::Error) -> PyErr {
    use dptrain::Error as E;
    let text = err.to_string();
    match &err {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(text)
        }
        E::Io { .. } => PyOSError::new_err(text),
        E::Tensor(_) | E::Link(_) | E::Aborted(_) => PyRuntimeError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

/// The Python type name of `value`, for `TypeError`s.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |name| name.to_string())
}

/// A real number argument: an int, a float or anything with `__float__` (numpy's scalars),
/// never a bool. Ints too large for a float become ±inf, which the crate then refuses by
/// name, as it refuses `--sample-rate 1e400`.
fn number(value: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    if value.is_instance_of::<PyBool>() || !value.hasattr("__float__")? {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number, not {}",
            type_name(value)
        )));
    }
    match value.extract::<f64>() {
        Ok(x) => Ok(x),
        Err(err) if err.is_instance_of::<PyOverflowError>(value.py()) => Ok(match value.lt(0)? {
            true => f64::NEG_INFINITY,
            false => f64::INFINITY,
        }),
        Err(err) => Err(err),
    }
}

/// A count argument: an int (or anything with `__index__`), never a bool or a float. A
/// negative count is refused with the crate's wording for a count of 0.
fn whole(value: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    if value.is_instance_of::<PyBool>() || !value.hasattr("__index__")? {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, not {}",
            type_name(value)
        )));
    }
    value.extract::<u64>().map_err(|_| {
        let shown = value.str().map_or_else(|_| "?".into(), |s| s.to_string());
        py_err(dptrain::Error::invalid(
            name.to_string(),
            shown,
            "a whole number at least 1",
        ))
    })
}

/// A validated block of `steps` steps (1 when absent) at sample rate q and noise
/// multiplier σ, from Python arguments.
fn steps_block(
    sample_rate: &Bound<'_, PyAny>,
    noise_multiplier: &Bound<'_, PyAny>,
    steps: Option<&Bound<'_, PyAny>>,
) -> PyResult<PrivacyEvent> {
    let (q, sigma) = (
        number(sample_rate, "sample_rate")?,
        number(noise_multiplier, "noise_multiplier")?,
    );
    let steps = match steps {
        Some(s) => whole(s, "steps")?,
        None => 1,
    };
    PrivacyEvent::new(q, sigma, steps).map_err(py_err)
}

/// An optional real number argument (None stays None).
fn maybe_number(value: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<f64>> {
    match value {
        Some(v) if !v.is_none() => number(v, name).map(Some),
        _ => Ok(None),
    }
}

/// A string argument.
fn text<'a>(value: &'a Bound<'_, PyAny>, name: &str) -> PyResult<std::borrow::Cow<'a, str>> {
    value
        .cast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!("{name} must be a str, not {}", type_name(value)))
        })?
        .to_cow()
}

/// The accountant named `value` ("rdp", "pld" or "prv").
fn accountant_kind(value: &Bound<'_, PyAny>) -> PyResult<AccountantKind> {
    Ok(cli_kind(
        text(value, "accountant")?.parse().map_err(py_err)?,
    ))
}

/// The command line's name for an accountant of the library.
fn cli_kind(kind: dptrain::privacy::AccountantKind) -> AccountantKind {
    match kind {
        dptrain::privacy::AccountantKind::Rdp => AccountantKind::Rdp,
        dptrain::privacy::AccountantKind::Pld => AccountantKind::Pld,
        dptrain::privacy::AccountantKind::Prv => AccountantKind::Prv,
    }
}

/// `dptrain account` of `ledger`, the GIL released: ε at `delta` or δ at `epsilon`. δ at ε
/// under PRV is refused in Python's words (the command line's names its flags).
fn account_of(
    py: Python<'_>,
    ledger: &dptrain::privacy::Ledger,
    (delta, epsilon): (Option<f64>, Option<f64>),
    kind: AccountantKind,
    grid: &GridArgs,
    conversion: ConversionKind,
) -> PyResult<Output> {
    if kind == AccountantKind::Prv && delta.is_none() && epsilon.is_some() {
        return Err(PyValueError::new_err(PRV_HAS_NO_DELTA));
    }
    py.detach(|| cli::account_ledger(ledger, delta, epsilon, kind, grid, conversion))
        .map_err(py_err)
}

/// The RDP conversion named `value` ("improved" or "classic").
fn conversion_kind(value: &Bound<'_, PyAny>) -> PyResult<ConversionKind> {
    match text(value, "conversion")?.as_ref() {
        "improved" => Ok(ConversionKind::Improved),
        "classic" => Ok(ConversionKind::Classic),
        other => Err(py_err(dptrain::Error::invalid(
            "conversion",
            other,
            "one of improved, classic",
        ))),
    }
}

/// The PLD and PRV settings from three numbers.
fn grid(
    discretization_interval: &Bound<'_, PyAny>,
    eps_error: &Bound<'_, PyAny>,
    delta_error: &Bound<'_, PyAny>,
) -> PyResult<GridArgs> {
    Ok(GridArgs {
        discretization_interval: number(discretization_interval, "discretization_interval")?,
        eps_error: number(eps_error, "eps_error")?,
        delta_error: number(delta_error, "delta_error")?,
    })
}

/// A JSON value as the Python object `json.loads` would give.
fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as V;
    match value {
        V::Null => Ok(py.None().into_bound(py)),
        V::Bool(b) => b.into_bound_py_any(py),
        V::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py),
            (None, Some(i)) => i.into_bound_py_any(py),
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py),
        },
        V::String(s) => s.into_bound_py_any(py),
        V::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        V::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
    }
}

/// A dp_accounting `DpEvent` (or any object of the same class name and attributes) as
/// dptrain's event tree. NoOp events compose to nothing; every other class is refused by
/// name.
fn event_from_py(event: &Bound<'_, PyAny>, depth: usize) -> PyResult<DpEvent> {
    if depth > MAX_EVENT_DEPTH {
        return Err(PyValueError::new_err(format!(
            "cannot account this event tree: it is nested deeper than {MAX_EVENT_DEPTH} levels"
        )));
    }
    let child = |name: &str| event_from_py(&event.getattr(name)?, depth + 1);
    let name = type_name(event);
    Ok(match name.as_str() {
        "GaussianDpEvent" => DpEvent::Gaussian {
            noise_multiplier: number(&event.getattr("noise_multiplier")?, "noise_multiplier")?,
        },
        "PoissonSampledDpEvent" => DpEvent::PoissonSampled {
            sample_rate: number(&event.getattr("sampling_probability")?, "sample_rate")?,
            event: Box::new(child("event")?),
        },
        "SelfComposedDpEvent" => DpEvent::SelfComposed {
            event: Box::new(child("event")?),
            count: whole(&event.getattr("count")?, "SelfComposed.count")?,
        },
        "ComposedDpEvent" => {
            let mut events = Vec::new();
            for part in event.getattr("events")?.try_iter()? {
                let part = event_from_py(&part?, depth + 1)?;
                // dp_accounting's NoOp: nothing happened, nothing to compose.
                if part != (DpEvent::Composed { events: Vec::new() }) {
                    events.push(part);
                }
            }
            DpEvent::Composed { events }
        }
        "NoOpDpEvent" => DpEvent::Composed { events: Vec::new() },
        other => {
            return Err(PyValueError::new_err(format!(
                "cannot account {other}: dptrain reads GaussianDpEvent, PoissonSampledDpEvent, \
                 SelfComposedDpEvent, ComposedDpEvent and NoOpDpEvent"
            )));
        }
    })
}

/// A privacy ledger: blocks of `steps` Poisson-subsampled Gaussian steps, each at its
/// sample rate q and noise multiplier σ, in order (equal neighbours merged).
#[pyclass(name = "Ledger", module = "dptrain.accounting", eq)]
#[derive(Debug, Clone, Default, PartialEq)]
struct Ledger(dptrain::privacy::Ledger);

#[pymethods]
impl Ledger {
    /// A ledger of `blocks`: (sample_rate, noise_multiplier, steps) triples, in order.
    #[new]
    #[pyo3(signature = (blocks = None))]
    fn new(blocks: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut ledger = Ledger::default();
        if let Some(blocks) = blocks.filter(|b| !b.is_none()) {
            for block in blocks.try_iter()? {
                let block = block?;
                let parts: Vec<Bound<'_, PyAny>> = match block.try_iter() {
                    Ok(items) => items.collect::<PyResult<_>>()?,
                    Err(_) => Vec::new(),
                };
                let [q, sigma, steps] = parts.as_slice() else {
                    return Err(PyTypeError::new_err(format!(
                        "a ledger block must be a (sample_rate, noise_multiplier, steps) \
                         triple, not {}",
                        block.repr()?
                    )));
                };
                ledger.0.push(steps_block(q, sigma, Some(steps))?);
            }
        }
        Ok(ledger)
    }

    /// Appends `steps` steps at sample rate q and noise multiplier σ.
    #[pyo3(signature = (sample_rate, noise_multiplier, steps = None))]
    fn add(
        &mut self,
        sample_rate: &Bound<'_, PyAny>,
        noise_multiplier: &Bound<'_, PyAny>,
        steps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.0
            .push(steps_block(sample_rate, noise_multiplier, steps)?);
        Ok(())
    }

    /// Appends a dp_accounting `DpEvent` (PoissonSampled, SelfComposed, Composed, Gaussian
    /// or NoOp), in its normal form.
    fn add_event(&mut self, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let tree = event_from_py(event, 0)?;
        let blocks = tree.blocks().map_err(py_err)?;
        for block in blocks {
            self.0.push(block);
        }
        Ok(())
    }

    /// Appends every block of `other`.
    fn extend(&mut self, other: &Bound<'_, Ledger>) {
        let other = other.borrow().0.clone();
        self.0.extend(&other);
    }

    /// The ledger of a dp_accounting `DpEvent`.
    #[staticmethod]
    fn from_dp_event(event: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut ledger = Ledger::default();
        ledger.add_event(event)?;
        Ok(ledger)
    }

    /// The (sample_rate, noise_multiplier, steps) blocks, in order.
    #[getter]
    fn blocks(&self) -> Vec<(f64, f64, u64)> {
        self.0
            .events()
            .iter()
            .map(|e| (e.sample_rate, e.noise_multiplier, e.steps))
            .collect()
    }

    /// The number of steps in all blocks.
    #[getter]
    fn steps(&self) -> u64 {
        self.0.steps()
    }

    /// The blocks with every field (mechanism, nominal sample rate), as JSON text.
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(self.0.events()).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The ledger as the CSV text of a run's ledger.csv.
    fn to_csv(&self) -> String {
        self.0.to_csv()
    }

    /// A ledger from CSV text (header `sample_rate,noise_multiplier,steps`).
    #[staticmethod]
    fn from_csv(text: &str) -> PyResult<Self> {
        dptrain::privacy::Ledger::parse_csv(text.as_bytes(), std::path::Path::new("<string>"))
            .map(Ledger)
            .map_err(py_err)
    }

    /// A ledger from a CSV file (a run's ledger.csv).
    #[staticmethod]
    fn read_csv(path: PathBuf) -> PyResult<Self> {
        dptrain::privacy::Ledger::read_csv(&path)
            .map(Ledger)
            .map_err(py_err)
    }

    /// Writes the ledger as CSV (through a temporary file, then a rename).
    fn write_csv(&self, path: PathBuf) -> PyResult<()> {
        self.0.write_csv(&path).map_err(py_err)
    }

    fn __len__(&self) -> usize {
        self.0.events().len()
    }

    /// Pickling (multiprocessing, caches): the ledger travels as its CSV text, every column
    /// kept.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let from_csv = slf.get_type().getattr("from_csv")?;
        Ok((from_csv, (slf.borrow().0.to_csv(),)))
    }

    fn __repr__(&self) -> String {
        let blocks: Vec<String> = self
            .blocks()
            .iter()
            .map(|(q, s, n)| format!("({q:?}, {s:?}, {n})"))
            .collect();
        format!("Ledger([{}])", blocks.join(", "))
    }
}

/// An accountant that composes steps as they happen and answers ε at any δ: RDP
/// incrementally, PLD and PRV from the ledger when asked (cached until it changes). A
/// drop-in for dp_accounting's accountants: `compose(event, count)`, `get_epsilon(δ)`.
#[pyclass(name = "Accountant", module = "dptrain.accounting")]
struct Accountant {
    inner: dptrain::privacy::Accountant,
    grid: GridArgs,
}

/// `value` as a number, or `default` when it is absent or None.
fn number_or(value: Option<&Bound<'_, PyAny>>, name: &str, default: f64) -> PyResult<f64> {
    Ok(maybe_number(value, name)?.unwrap_or(default))
}

/// What a pickled accountant carries: its kind, the PLD/PRV settings, the ledger's CSV.
type AccountantState = (&'static str, f64, f64, f64, String);

#[pymethods]
impl Accountant {
    /// An accountant with nothing spent: "rdp" (the default), "pld" or "prv", with the
    /// PLD and PRV settings of `account`.
    #[new]
    #[pyo3(signature = (accountant = None, *, discretization_interval = None, eps_error = None, delta_error = None))]
    fn new(
        accountant: Option<&Bound<'_, PyAny>>,
        discretization_interval: Option<&Bound<'_, PyAny>>,
        eps_error: Option<&Bound<'_, PyAny>>,
        delta_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let kind = match accountant.filter(|a| !a.is_none()) {
            Some(name) => accountant_kind(name)?,
            None => AccountantKind::Rdp,
        };
        let grid = GridArgs {
            discretization_interval: number_or(
                discretization_interval,
                "discretization_interval",
                dptrain::privacy::pld::DEFAULT_DISCRETIZATION_INTERVAL,
            )?,
            eps_error: number_or(
                eps_error,
                "eps_error",
                dptrain::privacy::prv::DEFAULT_EPS_ERROR,
            )?,
            delta_error: number_or(
                delta_error,
                "delta_error",
                dptrain::privacy::prv::DEFAULT_DELTA_ERROR,
            )?,
        };
        let inner = dptrain::privacy::Accountant::new(grid.settings(kind)).map_err(py_err)?;
        Ok(Accountant { inner, grid })
    }

    /// Composes `steps` steps at sample rate q and noise multiplier σ.
    #[pyo3(signature = (sample_rate, noise_multiplier, steps = None))]
    fn compose_steps(
        &mut self,
        sample_rate: &Bound<'_, PyAny>,
        noise_multiplier: &Bound<'_, PyAny>,
        steps: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let event = steps_block(sample_rate, noise_multiplier, steps)?;
        self.inner.compose(event).map_err(py_err)
    }

    /// Composes a dp_accounting `DpEvent` or a `Ledger`, `count` times (dp_accounting's
    /// signature); nothing is composed if any part cannot be accounted. Returns the
    /// accountant.
    #[pyo3(signature = (event, count = None))]
    fn compose<'py>(
        mut slf: PyRefMut<'py, Self>,
        event: &Bound<'py, PyAny>,
        count: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<PyRefMut<'py, Self>> {
        let count = match count {
            Some(c) => whole(c, "count")?,
            None => 1,
        };
        let tree = match event.cast::<Ledger>() {
            Ok(ledger) => ledger.borrow().0.to_event(),
            Err(_) => event_from_py(event, 0)?,
        };
        let tree = match count {
            1 => tree,
            _ => DpEvent::SelfComposed {
                event: Box::new(tree),
                count,
            },
        };
        slf.inner.compose_event(&tree).map_err(py_err)?;
        Ok(slf)
    }

    /// ε at `delta` for everything composed so far (PRV: its upper bound).
    fn epsilon(&mut self, py: Python<'_>, delta: &Bound<'_, PyAny>) -> PyResult<f64> {
        let delta = number(delta, "delta")?;
        let inner = &mut self.inner;
        py.detach(|| inner.epsilon(delta))
            .map(|spent| spent.epsilon)
            .map_err(py_err)
    }

    /// ε at `target_delta` (dp_accounting's name for `epsilon`).
    fn get_epsilon(&mut self, py: Python<'_>, target_delta: &Bound<'_, PyAny>) -> PyResult<f64> {
        self.epsilon(py, target_delta)
    }

    /// δ at `epsilon` for everything composed so far (RDP and PLD).
    fn delta(&self, py: Python<'_>, epsilon: &Bound<'_, PyAny>) -> PyResult<f64> {
        let epsilon = number(epsilon, "epsilon")?;
        let output = account_of(
            py,
            self.inner.ledger(),
            (None, Some(epsilon)),
            cli_kind(self.inner.kind()),
            &self.grid,
            ConversionKind::Improved,
        )?;
        Ok(output.json["delta"].as_f64().unwrap_or(f64::NAN))
    }

    /// δ at `target_epsilon` (dp_accounting's name for `delta`).
    fn get_delta(&self, py: Python<'_>, target_epsilon: &Bound<'_, PyAny>) -> PyResult<f64> {
        self.delta(py, target_epsilon)
    }

    /// Every step composed so far.
    #[getter]
    fn ledger(&self) -> Ledger {
        Ledger(self.inner.ledger().clone())
    }

    /// Pickling (multiprocessing, caches): the settings and the ledger's CSV; unpickling
    /// composes the ledger again, which gives the same state (composition is a sum in
    /// order).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, AccountantState)> {
        let restore = slf.get_type().getattr("_restore")?;
        let this = slf.borrow();
        let state = (
            this.inner.kind().name(),
            this.grid.discretization_interval,
            this.grid.eps_error,
            this.grid.delta_error,
            this.inner.ledger().to_csv(),
        );
        Ok((restore, state))
    }

    /// The accountant that `__reduce__` describes.
    #[staticmethod]
    fn _restore(
        accountant: &Bound<'_, PyAny>,
        discretization_interval: f64,
        eps_error: f64,
        delta_error: f64,
        ledger_csv: &str,
    ) -> PyResult<Self> {
        let kind = accountant_kind(accountant)?;
        let grid = GridArgs {
            discretization_interval,
            eps_error,
            delta_error,
        };
        let ledger = dptrain::privacy::Ledger::parse_csv(
            ledger_csv.as_bytes(),
            std::path::Path::new("<pickle>"),
        )
        .map_err(py_err)?;
        let inner = dptrain::privacy::Accountant::from_ledger(grid.settings(kind), &ledger)
            .map_err(py_err)?;
        Ok(Accountant { inner, grid })
    }

    /// Which accountant: "rdp", "pld" or "prv".
    #[getter]
    fn accountant(&self) -> &'static str {
        self.inner.kind().name()
    }

    fn __repr__(&self) -> String {
        format!(
            "Accountant({:?}, steps={})",
            self.inner.kind().name(),
            self.inner.ledger().steps()
        )
    }
}

/// `dptrain account` of a ledger: ε at `delta` or δ at `epsilon`, as the command line's JSON
/// object (a dict).
#[pyfunction]
#[pyo3(signature = (ledger, delta, epsilon, accountant, discretization_interval, eps_error, delta_error, conversion))]
#[allow(clippy::too_many_arguments)]
fn account<'py>(
    py: Python<'py>,
    ledger: &Bound<'py, Ledger>,
    delta: Option<&Bound<'py, PyAny>>,
    epsilon: Option<&Bound<'py, PyAny>>,
    accountant: &Bound<'py, PyAny>,
    discretization_interval: &Bound<'py, PyAny>,
    eps_error: &Bound<'py, PyAny>,
    delta_error: &Bound<'py, PyAny>,
    conversion: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let delta = maybe_number(delta, "delta")?;
    let epsilon = maybe_number(epsilon, "epsilon")?;
    let kind = accountant_kind(accountant)?;
    let grid = grid(discretization_interval, eps_error, delta_error)?;
    let conversion = conversion_kind(conversion)?;
    let ledger = ledger.borrow().0.clone();
    let output = account_of(py, &ledger, (delta, epsilon), kind, &grid, conversion)?;
    json_to_py(py, &output.json)
}

/// `dptrain calibrate`: the smallest noise multiplier whose ε at `delta` after `steps` steps
/// at `sample_rate` stays within `target_epsilon`, as the command line's JSON object.
#[pyfunction]
#[pyo3(signature = (target_epsilon, delta, sample_rate, steps, accountant, discretization_interval, eps_error, delta_error, conversion))]
#[allow(clippy::too_many_arguments)]
fn calibrate<'py>(
    py: Python<'py>,
    target_epsilon: &Bound<'py, PyAny>,
    delta: &Bound<'py, PyAny>,
    sample_rate: &Bound<'py, PyAny>,
    steps: &Bound<'py, PyAny>,
    accountant: &Bound<'py, PyAny>,
    discretization_interval: &Bound<'py, PyAny>,
    eps_error: &Bound<'py, PyAny>,
    delta_error: &Bound<'py, PyAny>,
    conversion: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let target = number(target_epsilon, "target_epsilon")?;
    let delta = number(delta, "delta")?;
    let q = number(sample_rate, "sample_rate")?;
    let steps = whole(steps, "steps")?;
    let kind = accountant_kind(accountant)?;
    let grid = grid(discretization_interval, eps_error, delta_error)?;
    let conversion = conversion_kind(conversion)?;
    let output = py
        .detach(|| cli::calibrate_steps(target, delta, q, steps, kind, &grid, conversion))
        .map_err(py_err)?;
    json_to_py(py, &output.json)
}

/// (sample_rate, steps) of `epochs` passes over `dataset_size` examples at expected batch
/// size `batch_size`: q = B/N, steps = ⌈E·N/B⌉, as `dptrain account --epochs`.
#[pyfunction]
fn epochs_to_steps(
    epochs: &Bound<'_, PyAny>,
    dataset_size: &Bound<'_, PyAny>,
    batch_size: &Bound<'_, PyAny>,
) -> PyResult<(f64, u64)> {
    dptrain::privacy::epochs_to_steps(
        number(epochs, "epochs")?,
        whole(dataset_size, "dataset_size")?,
        whole(batch_size, "batch_size")?,
    )
    .map_err(py_err)
}

/// Whether `train` logs at info level (false: warnings and errors only).
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Where the crate's log lines go: standard error, warnings and errors always, the rest
/// only while a `train(quiet=False)` runs.
struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Box<dyn std::io::Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Box::new(std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        match *meta.level() <= tracing::Level::WARN || VERBOSE.load(Ordering::Relaxed) {
            true => Box::new(std::io::stderr()),
            false => Box::new(std::io::sink()),
        }
    }
}

/// Runs one command as the binary does with `--json` and returns its JSON object, the GIL
/// released meanwhile.
fn run_command<'py>(
    py: Python<'py>,
    command: cli::Command,
    quiet: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let args = cli::Cli {
        json: true,
        verbose: 0,
        quiet,
        command,
    };
    VERBOSE.store(!quiet, Ordering::Relaxed);
    let result = py.detach(|| cli::run(&args));
    VERBOSE.store(false, Ordering::Relaxed);
    let output = result.map_err(|err| match cli::was_interrupted() {
        true => PyKeyboardInterrupt::new_err(err.to_string()),
        false => py_err(err),
    })?;
    json_to_py(py, &output.json)
}

/// `dptrain train CONFIG [--set KEY=VALUE]… [--out DIR | --resume DIR]`: trains, writes the
/// run directory and returns summary.json as a dict. A Ctrl-C checkpoints after the
/// current step and raises `KeyboardInterrupt` naming the checkpoint.
#[pyfunction]
#[pyo3(signature = (config, set, out, resume, quiet))]
fn train<'py>(
    py: Python<'py>,
    config: PathBuf,
    set: Vec<String>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    quiet: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let command = cli::Command::Train(cli::TrainArgs {
        config,
        out,
        set,
        resume,
        dist: None,
    });
    run_command(py, command, quiet)
}

/// `dptrain evaluate RUN_DIR [--data CONFIG_OR_TABLE] [--skip-rows N]`: a finished run's
/// model on its test split or other data of its schema, as the command line's JSON object.
#[pyfunction]
#[pyo3(signature = (run_dir, data, skip_rows))]
fn evaluate<'py>(
    py: Python<'py>,
    run_dir: PathBuf,
    data: Option<PathBuf>,
    skip_rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let command = cli::Command::Evaluate(cli::EvaluateArgs {
        run_dir,
        data,
        skip_rows,
    });
    run_command(py, command, true)
}

/// `dptrain predict RUN_DIR INPUT [--out FILE.csv] [--labels IDX] [--skip-rows N]`: class
/// and probabilities per row, written as CSV; returns the command line's JSON object.
#[pyfunction]
#[pyo3(signature = (run_dir, input, out, labels, skip_rows))]
fn predict<'py>(
    py: Python<'py>,
    run_dir: PathBuf,
    input: PathBuf,
    out: Option<PathBuf>,
    labels: Option<PathBuf>,
    skip_rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let command = cli::Command::Predict(cli::PredictArgs {
        run_dir,
        input,
        out,
        labels,
        skip_rows,
    });
    run_command(py, command, true)
}

/// The compiled half of dptrain's Python package.
#[pymodule]
fn _dptrain(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The binary's allocator setting (never return freed memory to the OS) and log lines on
    // standard error; a subscriber set by someone else stays.
    dptrain::runtime::keep_freed_memory();
    let _ = tracing_subscriber::fmt()
        .with_writer(LogWriter)
        .without_time()
        .with_target(false)
        .try_init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "DEFAULT_DISCRETIZATION_INTERVAL",
        dptrain::privacy::pld::DEFAULT_DISCRETIZATION_INTERVAL,
    )?;
    m.add(
        "DEFAULT_EPS_ERROR",
        dptrain::privacy::prv::DEFAULT_EPS_ERROR,
    )?;
    m.add(
        "DEFAULT_DELTA_ERROR",
        dptrain::privacy::prv::DEFAULT_DELTA_ERROR,
    )?;
    m.add_class::<Ledger>()?;
    m.add_class::<Accountant>()?;
    m.add_function(wrap_pyfunction!(account, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(epochs_to_steps, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    Ok(())
}
