//! Boot methods: how a board's firmware finds the kernel.
pub mod pxe;
pub mod rpi;
