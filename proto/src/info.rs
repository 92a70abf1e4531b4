//! `ProcessInfo` on the wire (`Session.info`): who a process is. The host writes it, guests
//! and clients read it.

use crate::cell_capnp::process_info;
use crate::reason::CellError;
use crate::spawn::list_len;

/// Who a process is (`ProcessInfo` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its pid (pid0 is 0).
    pub pid: u32,
    /// Its parent's pid; pid0's parent is reported as 0, like init's.
    pub parent: u32,
    /// pid0 is at depth 0, its children at 1, ...
    pub depth: u32,
    /// The names of the grants it holds, e.g. `["executor", "network"]`.
    pub grants: Vec<String>,
}

impl Info {
    /// Writes the info.
    pub fn write(&self, mut b: process_info::Builder<'_>) -> Result<(), CellError> {
        b.set_pid(self.pid);
        b.set_parent(self.parent);
        b.set_depth(self.depth);
        let mut list = b.init_grants(list_len(self.grants.len(), "grants")?);
        for (i, name) in self.grants.iter().enumerate() {
            list.set(i as u32, name.as_str());
        }
        Ok(())
    }

    /// Reads the info (grant names must be UTF-8).
    pub fn read(r: process_info::Reader<'_>) -> capnp::Result<Self> {
        let grants = r
            .get_grants()?
            .iter()
            .map(|g| Ok(g?.to_string()?))
            .collect::<capnp::Result<Vec<_>>>()?;
        Ok(Info {
            pid: r.get_pid(),
            parent: r.get_parent(),
            depth: r.get_depth(),
            grants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips() {
        let info = Info {
            pid: 3,
            parent: 1,
            depth: 2,
            grants: vec!["executor".into(), "network".into()],
        };
        let mut message = capnp::message::Builder::new_default();
        info.write(message.init_root()).expect("write");
        let back = Info::read(message.get_root_as_reader().expect("root")).expect("read");
        assert_eq!(back, info);
    }
}
