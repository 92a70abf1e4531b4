//! `HostDir`: a host directory a process holds — an open handle, never a path — and how it is
//! narrowed (a subtree, read-only) and preopened for a guest.
//!
//! Why a handle: the operator's `--dir` is opened once; every subtree is opened *beneath* its
//! parent's handle with cap-std's sandboxed lookup (no `..`, no absolute path, symlinks followed
//! only while they stay inside), and a child's WASI preopen is the very directory the handle
//! names (through `/proc/self/fd/N`, which reopens that inode, not a path that a guest with
//! write access elsewhere could swap for a symlink). Rights only narrow: `read_only` clears
//! `writable`, nothing sets it.
//!
//! Each `HostDir` holds one descriptor (shared by clones); the RPC layer bounds how many a
//! process may hold.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// A directory handle with its rights.
#[derive(Clone)]
pub struct HostDir {
    handle: Arc<File>,
    /// Where it is on the host, for logs and the audit trail only (never reopened by it).
    shown: PathBuf,
    writable: bool,
}

impl fmt::Debug for HostDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.shown.display(), self.rights())
    }
}

/// Why a subtree cannot be opened.
#[derive(Debug, Error)]
pub(crate) enum DirError {
    #[error("{0:?} is not a relative path inside the directory (no leading '/', no '..')")]
    NotBeneath(String),
    #[error("{path:?}: {error}")]
    Io { path: String, error: io::Error },
}

impl HostDir {
    /// Opens the operator's directory `path` (pid0's `--dir`/`--dir-rw`).
    ///
    /// # Errors
    /// It cannot be opened as a directory.
    pub(crate) fn open_root(path: &Path, writable: bool) -> io::Result<HostDir> {
        let handle =
            cap_primitives::fs::open_ambient_dir(path, cap_primitives::ambient_authority())?;
        Ok(HostDir {
            handle: Arc::new(handle),
            shown: path.to_path_buf(),
            writable,
        })
    }

    /// The subdirectory at `sub`, beneath this one, with the same rights.
    ///
    /// # Errors
    /// `sub` is empty, absolute or has a `..` component; or it does not name a directory
    /// inside this one (a symlink leading out of it included).
    pub(crate) fn open(&self, sub: &str) -> Result<HostDir, DirError> {
        let path = beneath(sub)?;
        let handle =
            cap_primitives::fs::open_dir(&self.handle, path).map_err(|error| DirError::Io {
                path: crate::text::guest_text(sub),
                error,
            })?;
        Ok(HostDir {
            handle: Arc::new(handle),
            shown: self.shown.join(path),
            writable: self.writable,
        })
    }

    /// Reads the regular file at `sub`, beneath this directory (the same lookup as [`open`]),
    /// refusing one larger than `max` bytes before reading it.
    ///
    /// [`open`]: HostDir::open
    ///
    /// # Errors
    /// As [`HostDir::open`]; or it is not a regular file, is larger than `max`, or cannot be read.
    pub(crate) fn read_file(&self, sub: &str, max: u64) -> Result<Vec<u8>, DirError> {
        use std::io::Read as _;
        let path = beneath(sub)?;
        let io = |error: io::Error| DirError::Io {
            path: crate::text::guest_text(sub),
            error,
        };
        use cap_primitives::fs::OpenOptionsExt as _;
        let mut options = cap_primitives::fs::OpenOptions::new();
        // Never blocks on a FIFO (a guest with a writable grant can plant one); a FIFO is
        // then refused as not a regular file.
        options.read(true).custom_flags(libc::O_NONBLOCK);
        let file = cap_primitives::fs::open(&self.handle, path, &options).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(io::Error::other("not a regular file")));
        }
        if meta.len() > max {
            return Err(io(io::Error::other(format!(
                "{} bytes, more than the {max}-byte maximum",
                meta.len()
            ))));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > max {
            return Err(io(io::Error::other("grew past the maximum while read")));
        }
        Ok(bytes)
    }

    /// The same tree, read-only.
    pub(crate) fn read_only(&self) -> HostDir {
        HostDir {
            writable: false,
            ..self.clone()
        }
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// `"rw"` or `"ro"`.
    pub(crate) fn rights(&self) -> &'static str {
        if self.writable {
            "rw"
        } else {
            "ro"
        }
    }

    /// Where it is on the host (for people: logs, audit).
    pub(crate) fn shown(&self) -> &Path {
        &self.shown
    }

    /// A path that opens exactly this directory, for wasmtime-wasi's preopen (which takes a
    /// path): the handle's own entry in `/proc/self/fd`, valid while `self` lives.
    pub(crate) fn preopen_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
    }
}

/// `sub` as a path beneath a directory: not empty, relative, no `..`.
fn beneath(sub: &str) -> Result<&Path, DirError> {
    let path = Path::new(sub);
    let ok = !sub.is_empty()
        && !sub.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(path)
    } else {
        Err(DirError::NotBeneath(crate::text::guest_text(sub)))
    }
}

/// A directory granted to a process, and the guest path it appears under.
#[derive(Clone, Debug)]
pub struct GrantedDir {
    pub guest: String,
    pub dir: HostDir,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, HostDir) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/sub/deeper")).unwrap();
        std::fs::create_dir_all(t.path().join("secret")).unwrap();
        std::os::unix::fs::symlink("../secret", t.path().join("root/out")).unwrap();
        std::os::unix::fs::symlink("sub/deeper", t.path().join("root/in")).unwrap();
        std::os::unix::fs::symlink("/", t.path().join("root/abs")).unwrap();
        let root = HostDir::open_root(&t.path().join("root"), true).unwrap();
        (t, root)
    }

    #[test]
    fn subtrees_never_reach_above() {
        let (_t, root) = tree();
        for bad in ["", "..", "sub/../..", "/", "/etc", "sub/..", "a\0b"] {
            assert!(
                matches!(root.open(bad), Err(DirError::NotBeneath(_))),
                "{bad:?}"
            );
        }
        for escape in ["out", "abs", "sub/../out"] {
            assert!(root.open(escape).is_err(), "{escape:?}");
        }
        assert!(root.open("missing").is_err());
        let sub = root.open("sub").unwrap();
        assert!(sub.writable());
        assert!(
            root.open("in").is_ok(),
            "a symlink staying inside is followed"
        );
        assert!(sub.open("deeper").is_ok());
        assert!(root.open("./sub/deeper").is_ok());
    }

    #[test]
    fn read_only_stays_read_only() {
        let (_t, root) = tree();
        let ro = root.read_only();
        assert!(!ro.writable());
        assert!(!ro.open("sub").unwrap().writable());
        assert!(root.writable());
    }

    #[test]
    fn the_preopen_path_is_the_same_directory() {
        let (t, root) = tree();
        let sub = root.open("sub").unwrap();
        let via_proc = std::fs::canonicalize(sub.preopen_path()).unwrap();
        let real = std::fs::canonicalize(t.path().join("root/sub")).unwrap();
        assert_eq!(via_proc, real);
    }
}
