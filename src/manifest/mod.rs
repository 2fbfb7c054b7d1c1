//! What an output folder says about itself.
pub mod sbom;
