//! `api` binary: the api library's `main`, with the api's own routes.

use std::process::ExitCode;

/// dlmalloc, not musl's own malloc, whose RSS grows without end once a
/// second thread allocates (see [`ops::alloc`]).
#[global_allocator]
static ALLOCATOR: ops::alloc::Allocator = ops::alloc::Allocator;

fn main() -> ExitCode {
    api::main_with(api::routes::gcd_routes)
}
