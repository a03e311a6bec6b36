//! `api` binary: the api library's `main`, with the api's own routes.

use std::process::ExitCode;

/// dlmalloc, not musl's own malloc, whose RSS grows without end once a
/// second thread allocates (see [`runtime::alloc`]).
#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

fn main() -> ExitCode {
    api::main_with(api::routes::gcd_routes)
}
