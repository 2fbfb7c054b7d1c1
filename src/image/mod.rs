//! Finished images and cards: personalizing them in place (`configure`) and reading what is
//! on them (`inspect`), without mounting anything.
pub mod facts;
pub mod inspect;
pub mod personalize;
pub mod slots;

#[cfg(test)]
mod tests;
