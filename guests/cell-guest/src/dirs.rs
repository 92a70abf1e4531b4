//! Directories: host directories as capabilities. A process lists the ones it holds
//! ([`Caps::dirs`]; they are also its WASI preopens, so `std::fs` works on them), narrows them
//! ([`Directory::open`] for a subtree, [`Directory::read_only`]) and hands them to a child
//! ([`SpawnBuilder::grant_dir`]), which sees each under the guest path it was given.

use anyhow::{Context as _, Result};

use crate::caps::{Caps, SpawnBuilder};
use crate::cell_capnp::directory;

/// A host directory (`Directory` in the schema). Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    client: directory::Client,
}

/// A directory this process holds, and the path it sees it under.
#[derive(Clone)]
pub struct GrantedDir {
    /// The guest path (its WASI preopen), e.g. `/data`.
    pub path: String,
    pub dir: Directory,
}

impl Directory {
    /// Wraps a raw client.
    pub fn new(client: directory::Client) -> Self {
        Directory { client }
    }

    /// The raw capability.
    pub fn client(&self) -> &directory::Client {
        &self.client
    }

    /// The subdirectory at `path` (relative, no `..`), with the same rights. Fails with
    /// `bad-request` for a path that is not beneath this directory, `io` when it cannot be
    /// opened (missing, or a symlink leading out).
    pub async fn open(&self, path: &str) -> Result<Directory> {
        let mut request = self.client.open_request();
        request.get().set_path(path);
        let response = request
            .send()
            .promise
            .await
            .with_context(|| format!("directory.open {path:?}"))?;
        Ok(Directory::new(response.get()?.get_dir()?))
    }

    /// The same tree, read-only.
    pub async fn read_only(&self) -> Result<Directory> {
        let response = self
            .client
            .read_only_request()
            .send()
            .promise
            .await
            .context("directory.readOnly")?;
        Ok(Directory::new(response.get()?.get_dir()?))
    }

    /// Whether this capability may change the tree.
    pub async fn writable(&self) -> Result<bool> {
        let response = self
            .client
            .writable_request()
            .send()
            .promise
            .await
            .context("directory.writable")?;
        Ok(response.get()?.get_writable())
    }
}

impl Caps {
    /// The directories this process holds, each with its guest path (pid0: the operator's
    /// `--dir`/`--dir-rw`; a child: what its parent granted).
    pub async fn dirs(&self) -> Result<Vec<GrantedDir>> {
        let response = self
            .session()
            .dirs_request()
            .send()
            .promise
            .await
            .context("session.dirs")?;
        let list = response.get()?.get_dirs()?;
        list.iter()
            .map(|entry| {
                Ok(GrantedDir {
                    path: entry.get_path()?.to_string()?,
                    dir: Directory::new(entry.get_dir()?),
                })
            })
            .collect()
    }
}

impl SpawnBuilder<'_> {
    /// Gives the child `dir` as a WASI preopen at `guest_path` (e.g. `/data`), with exactly
    /// the rights `dir` has.
    pub fn grant_dir(mut self, dir: &Directory, guest_path: impl Into<String>) -> Self {
        self.request.grants.dirs.push(cell_proto::DirGrant {
            path: guest_path.into(),
            dir: dir.client.clone(),
        });
        self
    }
}
