//! Where a clone keeps its cargo target directories inside the shared cache.
//!
//! Cargo decides what to rebuild by comparing file times, and the unit
//! hashes of a workspace's own crates do not depend on where the workspace
//! lies, so two clones sharing a target directory take each other's
//! artifacts: an edit in one clone older than a build in the other never
//! gets compiled. Each clone therefore has a directory of its own,
//! `$CACHE/clones/<folder>-<crc>`, keyed by its canonical path. The key is
//! POSIX `cksum`'s CRC of that path, which scripts/lib/common.sh
//! (`clone_cache`) and tests/system/build_cache.py compute the same way, so
//! the shell, the xtask and the tests agree on the directory without any of
//! them needing a hash tool that macOS lacks. What is the same for every
//! clone (the venv, cargo tools, zig and its wrappers) stays shared.

use std::path::{Path, PathBuf};

/// The cache directory of the clone at `root`, which must be canonical (the
/// same path `pwd -P` gives in it).
pub fn clone_dir(cache: &Path, root: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = root
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy());
    cache
        .join("clones")
        .join(format!("{name}-{:08x}", cksum(root.as_os_str().as_bytes())))
}

/// The checksum POSIX `cksum` prints: CRC-32 with polynomial 0x04C11DB7,
/// most significant bit first, over the data and then its length in as few
/// bytes as it takes (least significant first), inverted.
pub fn cksum(data: &[u8]) -> u32 {
    fn feed(crc: u32, byte: u8) -> u32 {
        (0..8).fold(crc ^ (u32::from(byte) << 24), |crc, _| {
            if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            }
        })
    }
    let mut crc = data.iter().fold(0, |crc, &b| feed(crc, b));
    let mut len = data.len();
    while len > 0 {
        crc = feed(crc, (len & 0xff) as u8);
        len >>= 8;
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn checksums_are_those_posix_cksum_prints() {
        // Printed by `printf '%s' X | cksum` on Linux and macOS alike.
        assert_eq!(cksum(b""), 4_294_967_295);
        assert_eq!(cksum(b"a"), 1_220_704_766);
        assert_eq!(cksum(b"123456789"), 930_766_865);
        assert_eq!(cksum(b"/src/pi-gcd"), 1_308_564_068);
        // A length of more than one byte.
        let long = "/a-rather/long/path".repeat(20);
        let mut tool = Command::new("cksum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        tool.stdin
            .take()
            .unwrap()
            .write_all(long.as_bytes())
            .unwrap();
        let out = tool.wait_with_output().unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            printed.split_whitespace().collect::<Vec<_>>(),
            [cksum(long.as_bytes()).to_string(), long.len().to_string()]
        );
    }

    #[test]
    fn each_clone_has_a_directory_of_its_own_named_after_its_folder() {
        let cache = Path::new("/home/pi/.cache/pi-gcd");
        let here = clone_dir(cache, Path::new("/src/pi-gcd"));
        assert_eq!(
            here,
            Path::new("/home/pi/.cache/pi-gcd/clones/pi-gcd-4dff1a64")
        );
        // Stable for the same path; another clone of the same name elsewhere
        // gets another directory.
        assert_eq!(here, clone_dir(cache, Path::new("/src/pi-gcd")));
        let other = clone_dir(cache, Path::new("/home/pi/work/pi-gcd"));
        assert_ne!(here, other);
        assert_eq!(other.parent(), here.parent());
        assert!(
            other
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pi-gcd-")
        );
    }
}
