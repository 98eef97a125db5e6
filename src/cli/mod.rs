//! The pieces of the `wgattn` binary, one job per file. Not part of the library.

pub mod bench;
pub mod case_file;
pub mod case_mods;
pub mod check;
pub mod demo;
pub mod errors;
pub mod heatmap;
pub mod info;
pub mod mask;
pub mod options;
pub mod picture;
pub mod plan;
pub mod result_file;
pub mod run;
pub mod shaders;
pub mod summary;
pub mod tuning;
