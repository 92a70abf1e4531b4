//! Files the host itself writes for a run — the report (`--report`), the audit log (`--audit`)
//! and the compile cache (`--cache-dir`) — kept out of every guest's reach.
//!
//! A guest with a writable directory could otherwise replace the report with a symlink and
//! have cell overwrite a file outside every grant at exit, or write a compiled artifact into
//! the cache that a later run loads as native code. So, before pid0 starts:
//!
//! - a path that lies inside a `--dir-rw` grant (or a cache directory that contains one) is
//!   refused ([`HostFileError::InsideGrant`], exit 125), compared on canonical paths so
//!   symlinks and `..` do not hide an overlap;
//! - the report and the audit log are opened once, without following a symlink in the last
//!   component (`O_NOFOLLOW`) and without blocking on a FIFO, must be regular files, and are
//!   written only through that handle;
//! - the cache directory is created `0700`, must be owned by the user running cell, and is
//!   made `0700` if it was wider. What the cache trusts, then, is this: nobody but that user
//!   and cell itself can write it (see the README).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// One host directory made visible to a guest through a WASI preopen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// The name the guest opens it by (its preopen path).
    pub guest: String,
    /// Whether the guest may create, change and delete files under it. Otherwise it may only
    /// read.
    pub writable: bool,
}

/// Why a host file cannot be used.
#[derive(Debug, Error)]
pub(crate) enum HostFileError {
    #[error("{what} {path} lies inside the writable directory {grant} (--dir-rw): a guest could replace it; put it elsewhere")]
    InsideGrant {
        what: &'static str,
        path: PathBuf,
        grant: PathBuf,
    },
    #[error("cannot write the {what} to {path}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("the report and the audit log are the same file ({path}): give each its own")]
    SameFile { path: PathBuf },
    #[error(
        "compile cache {path} is owned by uid {owner}, not by the user running cell (uid {me})"
    )]
    CacheOwner { path: PathBuf, owner: u32, me: u32 },
}

/// Where the run report goes, opened before pid0 starts.
#[derive(Debug)]
pub(crate) enum ReportOut {
    /// `--report -`: cell's own stderr.
    Stderr,
    File(File),
}

/// The host's own output files of one run besides the report, checked and opened before pid0
/// starts.
#[derive(Debug, Default)]
pub(crate) struct HostFiles {
    pub audit: Option<File>,
}

/// What [`prepare`] checks and opens.
pub(crate) struct HostPaths<'a> {
    /// The directories granted to pid0 (only the writable ones matter).
    pub dirs: &'a [DirGrant],
    pub report: Option<&'a Path>,
    pub audit: Option<&'a Path>,
    pub cache: Option<&'a Path>,
}

/// Opens the report alone (checked against the writable grants like every host file), first
/// of all, so that every later failure can still be reported in it.
///
/// # Errors
/// The report's path lies inside a writable grant, or cannot be opened as a regular file.
pub(crate) fn open_report(
    dirs: &[DirGrant],
    report: Option<&Path>,
) -> Result<Option<ReportOut>, HostFileError> {
    match report {
        None => Ok(None),
        Some(path) if path == Path::new("-") => Ok(Some(ReportOut::Stderr)),
        Some(path) => {
            check_outside("report", path, &writable_roots(dirs), false)?;
            Ok(Some(ReportOut::File(open_output("report", path)?)))
        }
    }
}

/// Checks every host output path against the writable grants (the report and the audit log
/// may not be one file), opens the audit log, and prepares the cache directory; the report
/// itself is [`open_report`]'s.
///
/// # Errors
/// The first [`HostFileError`].
pub(crate) fn prepare(paths: &HostPaths<'_>) -> Result<HostFiles, HostFileError> {
    let roots = writable_roots(paths.dirs);
    if let Some(cache) = paths.cache {
        check_cache(paths.dirs, cache)?;
    }
    if let (Some(report), Some(audit)) = (paths.report, paths.audit) {
        if report != Path::new("-")
            && canonical_target(report).ok().is_some()
            && canonical_target(report).ok() == canonical_target(audit).ok()
        {
            return Err(HostFileError::SameFile {
                path: audit.to_path_buf(),
            });
        }
    }
    let audit = match paths.audit {
        Some(path) => {
            check_outside("audit log", path, &roots, false)?;
            Some(open_output("audit log", path)?)
        }
        None => None,
    };
    Ok(HostFiles { audit })
}

/// Checks the compile cache directory against the writable grants (either may contain the
/// other) and prepares it (created `0700`, owned by this user).
///
/// # Errors
/// It overlaps a writable grant, cannot be created, or is someone else's.
pub(crate) fn check_cache(dirs: &[DirGrant], cache: &Path) -> Result<(), HostFileError> {
    check_outside("compile cache", cache, &writable_roots(dirs), true)?;
    prepare_cache_dir(cache)
}

/// The canonical host paths of the writable directory grants.
pub(crate) fn writable_roots(dirs: &[DirGrant]) -> Vec<PathBuf> {
    dirs.iter()
        .filter(|d| d.writable)
        .filter_map(|d| d.host.canonicalize().ok())
        .collect()
}

/// The canonical form of `path`, which may not exist yet: its longest existing ancestor
/// canonicalised, the rest appended (a missing part cannot be a symlink yet).
fn canonical_target(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        match existing.canonicalize() {
            Ok(base) => {
                return Ok(missing.iter().rev().fold(base, |p, part| p.join(part)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(e);
                };
                missing.push(name.to_os_string());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refuses `path` if it lies inside any of `roots` (or, for a directory, contains one).
///
/// # Errors
/// [`HostFileError::InsideGrant`], or the path's parent cannot be resolved.
pub(crate) fn check_outside(
    what: &'static str,
    path: &Path,
    roots: &[PathBuf],
    is_dir: bool,
) -> Result<(), HostFileError> {
    let canonical = canonical_target(path).map_err(|error| HostFileError::Io {
        what,
        path: path.to_path_buf(),
        error,
    })?;
    for root in roots {
        if canonical.starts_with(root) || (is_dir && root.starts_with(&canonical)) {
            return Err(HostFileError::InsideGrant {
                what,
                path: path.to_path_buf(),
                grant: root.clone(),
            });
        }
    }
    Ok(())
}

/// Opens (creating or truncating) a file the host will write, refusing a symlink in the last
/// component and anything but a regular file; never blocks on a FIFO.
///
/// # Errors
/// [`HostFileError::Io`] (e.g. `ELOOP` for a symlink) or [`HostFileError::NotAFile`].
pub(crate) fn open_output(what: &'static str, path: &Path) -> Result<File, HostFileError> {
    let io_err = |error| HostFileError::Io {
        what,
        path: path.to_path_buf(),
        error,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
        .map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(HostFileError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    file.set_len(0).map_err(io_err)?;
    Ok(file)
}

/// Creates the compile cache directory owner-only, and checks who owns it.
///
/// # Errors
/// It cannot be created, or belongs to another user.
pub(crate) fn prepare_cache_dir(path: &Path) -> Result<(), HostFileError> {
    let io_err = |error| HostFileError::Io {
        what: "compile cache",
        path: path.to_path_buf(),
        error,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err)?;
    let meta = std::fs::metadata(path).map_err(io_err)?;
    let me = current_uid();
    if meta.uid() != me {
        return Err(HostFileError::CacheOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}

/// The effective uid of this process.
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_not_followed_and_fifos_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("report.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_output("report", &link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = open_output("report", &fifo).unwrap_err();
            assert!(err.to_string().contains("fifo"), "{err}");
        }
    }

    #[test]
    fn paths_inside_writable_grants_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let grant = dir.path().join("rw");
        std::fs::create_dir(&grant).unwrap();
        let roots = writable_roots(&[DirGrant {
            host: grant.clone(),
            guest: "/rw".into(),
            writable: true,
        }]);
        let inside = grant.join("report.json");
        let sneaky = dir.path().join("rw/../rw/./report.json");
        for p in [&inside, &sneaky] {
            let err = check_outside("report", p, &roots, false).unwrap_err();
            assert!(matches!(err, HostFileError::InsideGrant { .. }), "{err}");
        }
        assert!(check_outside("report", &dir.path().join("out.json"), &roots, false).is_ok());
        // A cache directory that contains the grant is refused too.
        assert!(check_outside("compile cache", dir.path(), &roots, true).is_err());
    }

    #[test]
    fn report_and_audit_may_not_share_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let again = dir.path().join("./out.json");
        let err = prepare(&HostPaths {
            dirs: &[],
            report: Some(&path),
            audit: Some(&again),
            cache: None,
        })
        .unwrap_err();
        assert!(matches!(err, HostFileError::SameFile { .. }), "{err}");
    }

    #[test]
    fn cache_dir_is_made_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a/b/cache");
        prepare_cache_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare_cache_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
