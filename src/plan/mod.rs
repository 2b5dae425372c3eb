//! Plans: a step's dispatches and buffers, created once and replayed.

pub mod infer;
pub mod train;

pub use infer::InferStep;
pub use train::{EvalStep, HISTORY, PlanMemory, Statistics, TrainStep, Trained};
