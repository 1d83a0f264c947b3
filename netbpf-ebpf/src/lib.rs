#![no_std]
// The programs are in main.rs; this library target only exists so the
// userspace crate can depend on this package (to rebuild when it changes).
