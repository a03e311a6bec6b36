//! What this machine has: the one place that probes for tools, so route
//! choice ([`crate::route`]) is a pure function of a [`Machine`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::options::Options;

/// How long `docker info` and the like may take before the tool counts as
/// not working.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where Debian's std sources (`rust-web-src`) live.
pub const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Docker {
    pub installed: bool,
    pub buildx: bool,
    /// `docker info` answers: a daemon (or Docker Desktop, colima) runs.
    pub daemon: bool,
}

impl Docker {
    pub fn ready() -> Self {
        Docker {
            installed: true,
            buildx: true,
            daemon: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    pub cross: bool,
    pub docker: Docker,
    /// Debian's `rustc-web` (or `DEBIAN_RUSTC`), if executable.
    pub debian_rustc: Option<PathBuf>,
    /// Debian's `cargo-web` (or `DEBIAN_CARGO`), else any cargo on PATH.
    pub build_std_cargo: Option<PathBuf>,
    pub rust_src: bool,
    pub zig: Option<PathBuf>,
    /// `cargo-auditable`, which embeds the dependency list in the binaries.
    pub cargo_auditable: Option<PathBuf>,
    /// `cargo-cyclonedx`, which writes the images' SBOMs.
    pub cargo_cyclonedx: Option<PathBuf>,
    pub python3: bool,
    pub buildah: bool,
    /// Cargo's home (`CARGO_HOME`, else `~/.cargo`): its registry sources
    /// are where the dependencies are compiled from.
    pub cargo_home: Option<PathBuf>,
    /// Where the daemonless route's rustc keeps the std sources it builds
    /// (`<sysroot>/lib/rustlib/src/rust`), and the commit that rustc was
    /// built from, whose `/rustc/<commit>` prebuilt std carries instead.
    pub std_source: Option<(PathBuf, String)>,
}

impl Machine {
    pub fn probe(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> Machine {
        let path = env("PATH").unwrap_or_default();
        let find = |name: &str| find_in_path(name, &path);
        let executable = |p: PathBuf| is_executable(&p).then_some(p);
        let docker = match find("docker") {
            None => Docker::default(),
            Some(docker) => Docker {
                installed: true,
                buildx: succeeds(Command::new(&docker).args(["buildx", "version"])),
                daemon: succeeds(Command::new(&docker).arg("info")),
            },
        };
        let cargo_home = env("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|home| Path::new(&home).join(".cargo")));
        let cargo_tool = |name: &str| {
            find(name).or_else(|| {
                [Some(opts.cache.join("tools")), cargo_home.clone()]
                    .into_iter()
                    .flatten()
                    .map(|root| root.join("bin").join(name))
                    .find(|p| is_executable(p))
            })
        };
        let debian_cargo = env("DEBIAN_CARGO").unwrap_or_else(|| "/usr/bin/cargo".into());
        let debian_rustc = executable(
            env("DEBIAN_RUSTC")
                .unwrap_or_else(|| "/usr/bin/rustc".into())
                .into(),
        );
        Machine {
            cross: find("cross").is_some(),
            docker,
            std_source: debian_rustc.as_deref().and_then(std_source),
            debian_rustc,
            build_std_cargo: executable(debian_cargo.into()).or_else(|| find("cargo")),
            rust_src: Path::new(RUST_SRC).join("std").is_dir(),
            zig: find("zig").or_else(|| zig_in_venv(&opts.cache.join("venv"))),
            cargo_auditable: cargo_tool("cargo-auditable"),
            cargo_cyclonedx: cargo_tool("cargo-cyclonedx"),
            python3: find("python3").is_some(),
            buildah: find("buildah").is_some(),
            cargo_home,
        }
    }
}

/// Where `rustc` keeps its std sources, and the commit it was built from.
fn std_source(rustc: &Path) -> Option<(PathBuf, String)> {
    let output = |args: &[&str]| {
        let out = Command::new(rustc)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = PathBuf::from(output(&["--print", "sysroot"])?.trim());
    let commit = commit_hash(&output(&["-vV"])?)?;
    Some((sysroot.join("lib/rustlib/src/rust"), commit))
}

/// The `commit-hash` line of `rustc -vV`, unless it is unknown.
pub fn commit_hash(version: &str) -> Option<String> {
    version
        .lines()
        .find_map(|line| line.strip_prefix("commit-hash: "))
        .map(str::trim)
        .filter(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The first executable `name` in a PATH-style list.
pub fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether a probe command exits 0 within [`PROBE_TIMEOUT`]; one that
/// hangs (a Docker Desktop still starting) counts as a failure and is killed.
fn succeeds(command: &mut Command) -> bool {
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else { return false };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// zig from PyPI's `ziglang`, installed into the project venv by
/// scripts/install-deps.sh.
fn zig_in_venv(venv: &Path) -> Option<PathBuf> {
    let out = Command::new(venv.join("bin").join("python"))
        .args([
            "-c",
            "import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), 'zig'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let zig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && is_executable(&zig)).then_some(zig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_executable_on_the_path() {
        let dir = std::env::temp_dir().join(format!("xtask-path-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("tool"), "not executable").unwrap();
        std::fs::write(b.join("tool"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(find_in_path("tool", &path), Some(b.join("tool")));
        assert_eq!(find_in_path("other", &path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_commit_rustc_was_built_from() {
        let debian = "rustc 1.96.0 (ac68faa20 2026-05-25) (built from a source tarball)\n\
                      binary: rustc\ncommit-hash: ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96\n\
                      commit-date: 2026-05-25\nhost: x86_64-unknown-linux-gnu\n";
        assert_eq!(
            commit_hash(debian).as_deref(),
            Some("ac68faa20c58cbccd01ee7208bf3b6e93a7d7f96")
        );
        assert_eq!(commit_hash("binary: rustc\ncommit-hash: unknown\n"), None);
    }

    #[test]
    fn probes_report_exit_status() {
        assert!(succeeds(Command::new("sh").args(["-c", "exit 0"])));
        assert!(!succeeds(Command::new("sh").args(["-c", "exit 1"])));
        assert!(!succeeds(&mut Command::new("/nonexistent/docker")));
    }
}
