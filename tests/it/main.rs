//! dptrain's integration tests, in one binary so CI links once.

mod accounting_bounds;
mod accounting_discrete;
mod accounting_pld;
mod accounting_properties;
mod accounting_vectors;
mod architecture;
mod audit;
mod bad_inputs;
mod cli;
mod data;
mod data_formats;
mod dist;
mod dp_step;
mod evaluate;
mod examples;
mod federated;
mod flower;
mod fuzz;
mod grad_sample;
mod html;
mod layers;
mod mpc;
#[cfg(feature = "mpi")]
mod mpi;
mod private;
mod refusals;
mod report;
mod resume;
mod schedules;
mod secagg;
mod support;
mod table;
mod training;
