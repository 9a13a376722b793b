mod family;
mod label;
mod metric_descriptor;
pub mod parser;
mod sample;
#[cfg(test)]
mod test;

pub use family::Family;
pub use label::Label;
pub use metric_descriptor::{MetricDescriptor, MetricType};
pub use sample::Sample;
