//! What this process may spend, and on what.
//!
//! A container's memory limit is a wall: cross it and the kernel kills the
//! process, dropping every request it holds. Clients decide how many
//! connections, calls and bytes we hold, so each of those is capped, and the
//! caps are chosen so that the worst case of every port fits the limit:
//!
//! - [`MemoryLimit::detect`] reads the limit at start-up (a flag, else the
//!   cgroup v2 `memory.max` or v1 `memory.limit_in_bytes` of this process);
//! - each binary lists its worst case as [`Budget`] lines (count x bytes
//!   each: connections, calls in flight, fixed parts) and derives the caps
//!   no flag set from what is left ([`Budget::share`]);
//! - the sum must stay under [`USABLE_PERCENT`] of the limit: the rest is
//!   headroom for allocator fragmentation and for what we did not measure.
//!   A flag that asks for more than fits is a start-up error, not an OOM
//!   kill later.
//!
//! Outside a container (no limit) the caps are the binaries' defaults, and
//! the start-up line says so, and why: a kernel with its memory cgroup off
//! (Raspberry Pi OS's default) enforces no container limit at all.
//! The per-item sizes are measured worst cases (see `docs/memory-budget.md`,
//! and the hostile-client tests that check them).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::config::{ByteSize, ConfigError};

/// Share of the memory limit the budget may plan for.
pub const USABLE_PERCENT: u64 = 75;

/// cgroup v1 reports "no limit" as a huge number (a page-rounded i64::MAX).
const UNLIMITED_FROM: u64 = 1 << 60;

/// Where the memory limit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    Flag,
    Cgroup(PathBuf),
}

/// The most memory this process may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl MemoryLimit {
    /// A limit given by a flag.
    pub fn given(bytes: u64) -> Self {
        Self {
            bytes,
            source: LimitSource::Flag,
        }
    }

    /// The flag's value if given, else this process's cgroup limit, else
    /// none (not in a container, or a container without a limit).
    pub fn detect(flag: Option<ByteSize>) -> Option<Self> {
        if let Some(ByteSize(bytes)) = flag {
            return Some(Self::given(bytes));
        }
        let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        cgroup_limit(Path::new("/sys/fs/cgroup"), &membership).map(|(bytes, file)| Self {
            bytes,
            source: LimitSource::Cgroup(file),
        })
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            LimitSource::Flag => write!(f, "{} (from the flag)", mib(self.bytes)),
            LimitSource::Cgroup(file) => write!(f, "{} (from {})", mib(self.bytes), file.display()),
        }
    }
}

/// The tightest memory limit on this process's cgroup or any ancestor
/// visible under `root`, given `/proc/self/cgroup` as `membership`, with
/// the file it was read from.
///
/// cgroup v2 lists `0::/path`; v1 lists `N:memory:/path` (possibly with
/// other controllers). Inside a container the cgroup filesystem is usually
/// mounted at the container's own cgroup, so the listed path may not exist
/// under `root`: then `root` itself is the container's cgroup.
pub fn cgroup_limit(root: &Path, membership: &str) -> Option<(u64, PathBuf)> {
    let mut tightest: Option<(u64, PathBuf)> = None;
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            dirs.push(dir.clone());
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
        if !dirs.contains(&base) {
            dirs.push(base.clone());
        }
        for dir in dirs {
            let path = dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(bytes) = text.trim().parse::<u64>() else {
                continue; // "max": no limit at this level
            };
            if bytes < UNLIMITED_FROM && tightest.as_ref().is_none_or(|(t, _)| bytes < *t) {
                tightest = Some((bytes, path));
            }
        }
    }
    tightest
}

/// One kind of thing the process may hold: `count` of them at `each`
/// bytes apiece in the worst case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub what: &'static str,
    pub count: u64,
    pub each: u64,
}

impl Line {
    pub fn bytes(&self) -> u64 {
        self.count.saturating_mul(self.each)
    }
}

/// A process's worst-case memory, line by line, against its limit.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: Option<MemoryLimit>,
    lines: Vec<Line>,
    /// What the lines were sized for, printed under them.
    notes: Vec<String>,
}

impl Budget {
    pub fn new(limit: Option<MemoryLimit>) -> Self {
        Self {
            limit,
            lines: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn limit(&self) -> Option<&MemoryLimit> {
        self.limit.as_ref()
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Adds a note on what the lines were sized for (printed after the
    /// table).
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Adds a line whose count is already decided.
    pub fn add(&mut self, what: &'static str, count: u64, each: u64) {
        self.lines.push(Line { what, count, each });
    }

    /// Adds a line whose count is `explicit` if a flag set it; otherwise as
    /// many as fit in `1/parts` of what the limit leaves after the lines so
    /// far, never more than `default` (and `default` with no limit). Errors
    /// when not even `min` would fit.
    pub fn share(
        &mut self,
        what: &'static str,
        explicit: Option<usize>,
        each: u64,
        default: u64,
        min: u64,
        parts: u64,
    ) -> Result<usize, ConfigError> {
        let count = match (explicit, self.usable()) {
            (Some(count), _) => count as u64,
            (None, None) => default,
            (None, Some(usable)) => {
                let left = usable.saturating_sub(self.total()) / parts.max(1);
                let fits = left / each.max(1);
                if fits < min {
                    return Err(self.too_small(what, min, each));
                }
                fits.min(default)
            }
        };
        self.add(what, count, each);
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    pub fn total(&self) -> u64 {
        self.lines
            .iter()
            .map(Line::bytes)
            .fold(0, u64::saturating_add)
    }

    /// What the budget may plan for: [`USABLE_PERCENT`] of the limit.
    pub fn usable(&self) -> Option<u64> {
        self.limit
            .as_ref()
            .map(|limit| limit.bytes / 100 * USABLE_PERCENT)
    }

    /// An error unless the total fits the usable part of the limit.
    pub fn ensure_fits(&self) -> Result<(), ConfigError> {
        match (self.usable(), &self.limit) {
            (Some(usable), Some(limit)) if self.total() > usable => Err(ConfigError::Invalid {
                name: "the memory budget".into(),
                reason: format!(
                    "the caps need up to {} at worst, more than {USABLE_PERCENT}% of the memory \
                     limit {limit}; lower the flags that set them or raise the limit\n{self}",
                    mib(self.total()),
                ),
            }),
            _ => Ok(()),
        }
    }

    fn too_small(&self, what: &str, min: u64, each: u64) -> ConfigError {
        let needed = self.total() + min * each;
        ConfigError::Invalid {
            name: "the memory limit".into(),
            reason: format!(
                "{} is too small: {min} {what} alone need {} beside {} for the rest; \
                 the limit must be at least {}",
                self.limit
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                mib(min * each),
                mib(self.total()),
                mib(needed / USABLE_PERCENT * 100),
            ),
        }
    }

    /// One log line with the limit, the total and every line.
    pub fn log(&self, process: &str) {
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|line| {
                format!(
                    "{} x {} = {} {}",
                    line.count,
                    kib(line.each),
                    mib(line.bytes()),
                    line.what
                )
            })
            .collect();
        match &self.limit {
            Some(limit) => {
                tracing::info!(
                    memory_limit = %limit,
                    worst_case = %mib(self.total()),
                    lines = %lines.join("; "),
                    "{process} memory budget"
                );
                if limit.source == LimitSource::Flag && memory_controller() == MemoryController::Off
                {
                    tracing::warn!(
                        "{process}: the kernel's memory cgroup is off, so nothing enforces \
                         the memory limit but these caps (see docs/deploying.md)"
                    );
                }
            }
            None => tracing::warn!(
                memory_limit = "none",
                worst_case = %mib(self.total()),
                lines = %lines.join("; "),
                "{process} memory budget: no memory limit found ({}); the caps are the \
                 defaults",
                memory_controller().why_no_limit()
            ),
        }
    }
}

/// Whether the kernel can limit memory at all: Raspberry Pi OS, for one,
/// boots with the memory cgroup off, and then no container limit is
/// enforced (or found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryController {
    On,
    Off,
    /// No `/proc/cgroups`: not Linux.
    Unknown,
}

impl MemoryController {
    /// From the text of `/proc/cgroups`: a `memory` line whose last column
    /// (`enabled`) is 1. A kernel built without it lists no such line.
    pub fn from_proc_cgroups(text: &str) -> Self {
        if text.trim().is_empty() {
            return Self::Unknown;
        }
        let enabled = text.lines().any(|line| {
            let mut columns = line.split_whitespace();
            columns.next() == Some("memory") && columns.last() == Some("1")
        });
        if enabled { Self::On } else { Self::Off }
    }

    /// Why no limit was found, in words for the start-up line.
    pub fn why_no_limit(self) -> &'static str {
        match self {
            Self::On => "no --memory-limit, and no cgroup memory limit on this process",
            Self::Off => {
                "the kernel's memory cgroup is off, so no limit is enforced; on Raspberry Pi \
                 OS add cgroup_enable=memory cgroup_memory=1 to the kernel command line \
                 (docs/deploying.md)"
            }
            Self::Unknown => "no --memory-limit, and no cgroups on this system",
        }
    }
}

/// This kernel's [`MemoryController`].
pub fn memory_controller() -> MemoryController {
    MemoryController::from_proc_cgroups(
        &std::fs::read_to_string("/proc/cgroups").unwrap_or_default(),
    )
}

/// A table, for `--check-config`.
impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| what | count | each | worst case |")?;
        writeln!(f, "|---|---:|---:|---:|")?;
        for line in &self.lines {
            writeln!(
                f,
                "| {} | {} | {} | {} |",
                line.what,
                line.count,
                kib(line.each),
                mib(line.bytes())
            )?;
        }
        writeln!(f, "| **total** | | | **{}** |", mib(self.total()))?;
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        match (&self.limit, self.usable()) {
            (Some(limit), Some(usable)) => write!(
                f,
                "memory limit {limit}; the budget may use {USABLE_PERCENT}% of it: {}",
                mib(usable)
            ),
            _ => write!(
                f,
                "no memory limit found ({}): default caps",
                memory_controller().why_no_limit()
            ),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// KiB below a MiB, else MiB.
fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        mib(bytes)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// How many client connections the open-file limit leaves room for, after
/// `reserved` descriptors for everything else. An error if `explicit` (a
/// cap set by the flag `flag`) asks for more, or, with no flag, if the room
/// is under `min`: a port with room for nobody would accept nobody while
/// the process looked healthy.
pub fn open_file_room(
    flag: &str,
    explicit: Option<usize>,
    open_files: u64,
    reserved: u64,
    min: u64,
) -> Result<u64, ConfigError> {
    let room = open_files.saturating_sub(reserved);
    match explicit {
        Some(connections) if connections as u64 > room => Err(ConfigError::Invalid {
            name: flag.to_owned(),
            reason: format!(
                "{connections} connections need more file descriptors than the open-file \
                 limit ({open_files}) leaves ({room}); raise `ulimit -n` or lower it"
            ),
        }),
        None if room < min => Err(ConfigError::Invalid {
            name: "the open-file limit".into(),
            reason: format!(
                "{open_files} file descriptors leave room for {room} client connections once \
                 {reserved} are kept for the admin port and the process itself, fewer than \
                 the {min} it needs; raise it to at least {} (`ulimit -n`, or the container \
                 runtime's nofile limit)",
                reserved + min
            ),
        }),
        _ => Ok(room),
    }
}

/// Raises this process's soft open-file limit to its hard limit, as Go
/// programs do at start-up, and returns the soft limit now in force. Every
/// connection is a file descriptor; the caps must fit under this number.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we
    // pass, which lives on this stack frame for the whole call.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // rlim_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup_tree(files: &[(&str, &str)]) -> tempdir::TempDir {
        let root = tempdir::TempDir::new();
        for (path, content) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    #[test]
    fn cgroup_v2_limit_of_the_process_or_an_ancestor() {
        let root = cgroup_tree(&[
            ("kubepods/pod1/memory.max", "100000000\n"),
            ("kubepods/pod1/ctr/memory.max", "67108864\n"),
            ("memory.max", "max\n"),
        ]);
        let found = cgroup_limit(root.path(), "0::/kubepods/pod1/ctr\n").unwrap();
        assert_eq!(found.0, 64 << 20);
        assert!(found.1.ends_with("kubepods/pod1/ctr/memory.max"));
        // The pod's limit is tighter than the container's.
        let root = cgroup_tree(&[
            ("p/memory.max", "33554432\n"),
            ("p/c/memory.max", "67108864\n"),
        ]);
        assert_eq!(cgroup_limit(root.path(), "0::/p/c\n").unwrap().0, 32 << 20);
    }

    #[test]
    fn cgroup_namespace_root_is_the_container() {
        // Listed path does not exist under the mount: the mount is ours.
        let root = cgroup_tree(&[("memory.max", "33554432\n")]);
        assert_eq!(cgroup_limit(root.path(), "0::/\n").unwrap().0, 32 << 20);
        let root = cgroup_tree(&[("memory/memory.limit_in_bytes", "67108864\n")]);
        let membership = "12:cpu,cpuacct:/x\n4:memory:/libpod_parent/abc\n";
        assert_eq!(cgroup_limit(root.path(), membership).unwrap().0, 64 << 20);
    }

    #[test]
    fn no_limit_is_none() {
        let root = cgroup_tree(&[("memory.max", "max\n")]);
        assert_eq!(cgroup_limit(root.path(), "0::/\n"), None);
        let root = cgroup_tree(&[("memory/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(cgroup_limit(root.path(), "4:memory:/\n"), None);
        assert_eq!(cgroup_limit(root.path(), ""), None);
    }

    #[test]
    fn the_memory_controller_is_read_from_proc_cgroups() {
        let on = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                  cpu\t1\t55\t1\nmemory\t4\t55\t1\npids\t8\t60\t1\n";
        assert_eq!(
            MemoryController::from_proc_cgroups(on),
            MemoryController::On
        );
        // Raspberry Pi OS without cgroup_enable=memory.
        let off = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
                   cpu\t0\t70\t1\nmemory\t0\t70\t0\npids\t0\t70\t1\n";
        assert_eq!(
            MemoryController::from_proc_cgroups(off),
            MemoryController::Off
        );
        let missing = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t70\t1\n";
        assert_eq!(
            MemoryController::from_proc_cgroups(missing),
            MemoryController::Off
        );
        assert_eq!(
            MemoryController::from_proc_cgroups(""),
            MemoryController::Unknown
        );
        assert!(
            MemoryController::Off
                .why_no_limit()
                .contains("cgroup_enable=memory")
        );
    }

    #[test]
    fn the_budget_says_when_no_limit_was_found() {
        let mut budget = Budget::new(None);
        budget.add("conns", 4, 1 << 20);
        let table = budget.to_string();
        assert!(table.contains("no memory limit found ("), "{table}");
        assert!(table.ends_with("): default caps"), "{table}");
    }

    fn limited(bytes: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit::given(bytes))
    }

    #[test]
    fn explicit_connections_must_fit_the_open_file_limit() {
        assert_eq!(
            open_file_room("--max-connections", None, 1024, 100, 8).unwrap(),
            924
        );
        assert_eq!(
            open_file_room("--max-connections", Some(900), 1024, 100, 8).unwrap(),
            924
        );
        let err = open_file_room("--max-connections", Some(1000), 1024, 100, 8).unwrap_err();
        assert!(err.to_string().contains("open-file limit (1024)"), "{err}");
    }

    #[test]
    fn an_open_file_limit_with_no_room_for_a_few_connections_is_an_error() {
        // The floor itself is enough.
        assert_eq!(
            open_file_room("--max-connections", None, 108, 100, 8).unwrap(),
            8
        );
        for open_files in [0, 64, 100, 107] {
            let err = open_file_room("--max-connections", None, open_files, 100, 8)
                .unwrap_err()
                .to_string();
            let room = open_files.saturating_sub(100);
            assert_eq!(
                err,
                format!(
                    "the open-file limit is invalid: {open_files} file descriptors leave room \
                     for {room} client connections once 100 are kept for the admin port and \
                     the process itself, fewer than the 8 it needs; raise it to at least 108 \
                     (`ulimit -n`, or the container runtime's nofile limit)"
                )
            );
        }
        // A cap set by the flag that fits is the user's choice, floor or not.
        assert_eq!(
            open_file_room("--max-connections", Some(2), 103, 100, 8).unwrap(),
            3
        );
    }

    #[test]
    fn shares_fit_what_the_limit_leaves() {
        let mut budget = Budget::new(limited(100 << 20)); // 75 MiB usable
        budget.add("baseline", 1, 15 << 20);
        // 60 MiB left, half of it for 1 MiB connections: 30.
        assert_eq!(
            budget.share("conns", None, 1 << 20, 4096, 1, 2).unwrap(),
            30
        );
        // The other 30 MiB, but never more than the default.
        assert_eq!(
            budget.share("calls", None, 1 << 10, 100, 1, 1).unwrap(),
            100
        );
        budget.ensure_fits().unwrap();
    }

    #[test]
    fn explicit_counts_win_but_must_fit() {
        let mut budget = Budget::new(limited(64 << 20));
        budget
            .share("conns", Some(10), 1 << 20, 4096, 1, 1)
            .unwrap();
        budget.ensure_fits().unwrap();
        budget
            .share("more", Some(100), 1 << 20, 4096, 1, 1)
            .unwrap();
        let err = budget.ensure_fits().unwrap_err().to_string();
        assert!(err.contains("110.0 MiB at worst"), "{err}");
    }

    #[test]
    fn no_limit_means_defaults() {
        let mut budget = Budget::new(None);
        assert_eq!(
            budget.share("conns", None, 1 << 20, 4096, 1, 1).unwrap(),
            4096
        );
        budget.ensure_fits().unwrap();
    }

    #[test]
    fn a_limit_too_small_for_the_minimum_is_an_error() {
        let mut budget = Budget::new(limited(4 << 20));
        budget.add("baseline", 1, 3 << 20);
        let err = budget
            .share("conns", None, 1 << 20, 4096, 16, 1)
            .unwrap_err();
        assert!(err.to_string().contains("at least"), "{err}");
    }

    #[test]
    fn the_open_file_limit_is_at_least_what_it_was() {
        assert!(raise_open_file_limit() >= 64);
    }

    /// A directory removed when dropped (std has no temporary directories).
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct TempDir(PathBuf);

        impl TempDir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "runtime-budget-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
