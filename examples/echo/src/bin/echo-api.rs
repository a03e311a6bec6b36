//! The api with `GET /say/{text}`, calling `pb.Echo/Say` on gcd's
//! replicas; otherwise `api`'s own `main`.

use std::process::ExitCode;

use api::{Config, Server};

#[global_allocator]
static ALLOCATOR: ops::alloc::Allocator = ops::alloc::Allocator;

fn main() -> ExitCode {
    let args: api::config::Args = match ops::config::parse_args() {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    ops::logging::init();
    let open_files = ops::budget::raise_open_file_limit();
    let config = match Config::from_args(args, open_files) {
        Ok(config) => config,
        Err(err) => return ops::process::invalid_config(&err),
    };
    if config.check_only {
        return ops::process::report_budget("api", &config.budget);
    }
    ops::process::run("api", config.process, |lifecycle| async move {
        Server::bind(config)
            .await?
            .run_routes(lifecycle, echo::routes_with_say)
            .await
    })
}
