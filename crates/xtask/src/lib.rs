//! `cargo xtask`: the whole GenIR study end to end ([`study::reproduce`]) with a report a researcher would
//! publish ([`report`]), built from cached steps ([`steps`]); `cargo xtask bench` ([`bench`]).

pub mod bench;
pub mod frames;
pub mod report;
pub mod steps;
pub mod study;

pub use study::{reproduce, Options, Scale, Study};
