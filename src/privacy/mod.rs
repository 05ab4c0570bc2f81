//! Privacy accounting: what a run spends, in (ε, δ).
//!
//! This room never sees a tensor. The trainer reports each step actually taken as a
//! [`PrivacyEvent`] (sample rate q, noise multiplier σ); the [`RdpAccountant`] composes their
//! Rényi DP ([`rdp`]), converts it to (ε, δ) ([`conversion`]), and answers whether the next
//! step fits a [`PrivacyBudget`]. [`calibration`] finds the noise a target ε needs. The
//! tighter [`pld`] and [`prv`] accountants compose the same ledger's privacy loss
//! distributions by FFT ([`loss_grid`]); [`Accountant`] is the choice among the three.
//!
//! Neighbours: `sampling` must sample exactly as assumed here (Poisson, rate q);
//! `mechanism` adds the noise σ·C that is accounted here.

pub mod accountant;
pub mod accounting;
pub mod budget;
pub mod calibration;
pub mod conversion;
pub mod discrete;
pub mod distributed;
pub mod event;
pub mod ledger;
pub mod loss_grid;
pub mod numerics;
pub mod pld;
pub mod prv;
pub mod rdp;

pub use accountant::{PrivacySpent, RdpAccountant, ledger_rdp};
pub use accounting::{
    Accountant, AccountantKind, AccountantSettings, EpsilonUnderAll, epsilon_under_all,
};
pub use budget::{Admission, PrivacyBudget};
pub use calibration::{
    Calibration, calibrate_noise_multiplier, calibrate_noise_multiplier_with, calibrate_scale,
};
pub use conversion::{Conversion, delta_from_rdp, epsilon_from_rdp};
pub use event::DpEvent;
pub use ledger::{Ledger, Mechanism, PrivacyEvent, epochs_to_steps};
pub use rdp::{Orders, poisson_gaussian_rdp};
