//! `cargo run -p cell-proto-gen` (what `make proto` runs): rewrites the checked-in bindings.

fn main() {
    let scratch = std::env::temp_dir().join(format!("cell-proto-gen-{}", std::process::id()));
    let result = cell_proto_gen::generate(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let written = result.and_then(|code| {
        let path = cell_proto_gen::checked_in();
        std::fs::write(&path, code).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    });
    match written {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => {
            eprintln!("cell-proto-gen: {e}");
            std::process::exit(1);
        }
    }
}
