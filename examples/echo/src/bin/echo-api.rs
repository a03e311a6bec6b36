//! The api with `GET /say/{text}`, calling `pb.Echo/Say` on gcd's
//! replicas; otherwise `api`'s own `main`.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: runtime::alloc::Allocator = runtime::alloc::Allocator;

fn main() -> ExitCode {
    api::main_with(echo::routes_with_say)
}
