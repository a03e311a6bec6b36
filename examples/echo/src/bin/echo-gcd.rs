//! gcd with `pb.Echo/Say` on its gRPC port.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

fn main() -> ExitCode {
    gcd::main_with(echo::with_say)
}
