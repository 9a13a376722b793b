//! The bodies of the step kinds. Each takes its parameters and input folders and
//! writes files into a staging folder; `exec` owns scheduling, caching and servers.

pub mod aggregate;
pub mod datagen;
pub mod import;
pub mod measure;
pub mod quality;
pub mod report;
