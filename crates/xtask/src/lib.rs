//! `cargo xtask`: the whole GenIR study end to end ([`study::reproduce`]) with a report a researcher would
//! publish ([`report`]), built from cached steps ([`steps`]).

pub mod frames;
pub mod png;
pub mod report;
pub mod steps;
pub mod study;

pub use study::{reproduce, Options, Scale, Study};
