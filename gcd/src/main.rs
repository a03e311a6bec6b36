//! `gcd` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

/// dlmalloc, not musl's own malloc, whose RSS grows without end once a
/// second thread allocates (see [`ops::alloc`]).
#[global_allocator]
static ALLOCATOR: ops::alloc::Allocator = ops::alloc::Allocator;

fn main() -> ExitCode {
    gcd::main_with(|routes| routes)
}
