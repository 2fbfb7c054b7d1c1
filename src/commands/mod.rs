//! One handler per command: the only place that prints or prompts.
pub mod smoke;
