//! `gcd` binary: parse flags, then hand over to the library.

use std::process::ExitCode;

/// dlmalloc, not musl's own malloc, whose RSS grows without end once a
/// second thread allocates (see [`runtime::alloc`]).
#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

fn main() -> ExitCode {
    gcd::main_with(|routes| routes)
}
