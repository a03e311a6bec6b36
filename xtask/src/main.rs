//! `cargo xtask <task>`: see the library for the tasks.

use std::process::ExitCode;

fn main() -> ExitCode {
    xtask::main(std::env::args().skip(1).collect())
}
