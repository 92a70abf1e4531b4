//! The SDK marker: how `cell inspect` (and `cell run`) tell a cell guest from an ordinary WASI
//! program without running it.

/// The name of the custom section the guest SDK links into every guest.
pub const SDK_MARKER_SECTION: &str = "cell-guest";

/// The section's contents: names the schema the guest speaks (its file ID).
pub const SDK_MARKER: [u8; 43] = *b"cell-guest: capnp schema 0x82e2c8207d94532d";

#[cfg(test)]
mod tests {
    #[test]
    fn the_marker_names_this_schema() {
        let text = std::str::from_utf8(&super::SDK_MARKER).expect("ASCII");
        let id = text.rsplit(' ').next().expect("an id");
        let schema = include_str!("../../capnp/cell.capnp");
        assert!(
            schema.contains(&format!("@{id};")),
            "schema id {id} not in cell.capnp"
        );
    }
}
