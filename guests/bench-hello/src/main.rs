//! bench-hello: a plain std hello world, for the start-up benchmark (`cell run --plain` and
//! `wasmtime run` run the very same file).

fn main() {
    println!("hello");
}
