//! The one error type of dptrain, and its `Result` alias.
//!
//! Every variant carries what a user needs to fix the problem: the offending value, the
//! accepted range, and, for files, the path, line and column. The binary prints the error
//! and exits with a non-zero code; nothing in the library panics on user input.

use std::path::PathBuf;

/// Everything that can go wrong in dptrain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A numeric parameter is outside the range where the maths holds.
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidParameter {
        /// The parameter's name, as a user spells it (`sample_rate`, `delta`, ...).
        name: std::borrow::Cow<'static, str>,
        /// The value that was given, formatted.
        value: String,
        /// What would have been accepted, in words.
        expected: String,
    },

    /// No noise multiplier within the search range reaches the target epsilon.
    #[error(
        "target epsilon {target_epsilon} at delta {delta} cannot be reached: even noise multiplier \
         {max_noise_multiplier} gives epsilon {epsilon_at_max}; raise the target, sample fewer \
         examples per step or take fewer steps"
    )]
    Unreachable {
        /// The epsilon that was asked for.
        target_epsilon: f64,
        /// The delta it was asked at.
        delta: f64,
        /// The largest noise multiplier tried.
        max_noise_multiplier: f64,
        /// The epsilon that noise multiplier gives.
        epsilon_at_max: f64,
    },

    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A file was read but its content is not what was expected.
    #[error("{path}:{location}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in the file: `line N`, `line N, column M (name)`.
        location: String,
        /// What was found and what was expected.
        message: String,
    },

    /// A tensor operation failed (shapes, dtypes, devices): a bug or an unsupported model.
    #[error("tensor operation failed: {0}")]
    Tensor(String),

    /// A model description that cannot be built: the layer's path and what is wrong.
    #[error("model layer `{path}`: {message}")]
    Model {
        /// The layer's path (`3.basic.1.conv2d`, or its `name`).
        path: String,
        /// What is wrong, and the fix.
        message: String,
    },

    /// A privacy event that an accountant has no proof for: the event and the accountant by
    /// name, and what would be accepted.
    #[error("cannot account {event}: {reason}")]
    Unaccountable {
        /// The event (dp_accounting's name) and, where one refused it, the accountant.
        event: String,
        /// Why, and what to do instead.
        reason: String,
    },

    /// Command-line arguments that do not fit together.
    #[error("{0}")]
    Usage(String),

    /// A message that does not parse: truncated, oversized, mistagged or out of order.
    #[error("malformed {what} message: {message}")]
    Malformed {
        /// The message type.
        what: &'static str,
        /// What is wrong, and where.
        message: String,
    },

    /// A connection to another party failed or stalled (disconnected, timed out): the
    /// protocol stops with nothing revealed.
    #[error("connection: {0}")]
    Link(String),

    /// A secure-aggregation round that cannot complete (too few survivors to unmask): it
    /// reveals nothing.
    #[error("secure aggregation aborted: {0}")]
    Aborted(String),
}

/// `Result` with dptrain's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid(
        name: impl Into<std::borrow::Cow<'static, str>>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name: name.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
