//! kv-service: a key-value store served to other guests (`cell_guest::serve`). Its parent
//! gets it from `Process.service()` and may grant it to other children, who call it through
//! the host; the data lives only in this guest's memory.
//!
//! `kv-service --hostile` misbehaves on purpose, for the tests of the host's proxy: `get` of
//! `hang` never answers, of `big` answers with a value of `--big-bytes N` bytes (default
//! 4 MiB), of `exit` ends the process in the middle of the call.

use std::cell::RefCell;
use std::collections::HashMap;

use capnp::capability::Rc;
use cell_guest::log;
use kv_service::kv_capnp::kv;

struct Store {
    data: RefCell<HashMap<String, String>>,
    hostile: bool,
    big_bytes: usize,
}

impl kv::Server for Store {
    async fn get(
        self: Rc<Self>,
        params: kv::GetParams,
        mut results: kv::GetResults,
    ) -> Result<(), capnp::Error> {
        let key = params.get()?.get_key()?.to_string()?;
        if self.hostile {
            match key.as_str() {
                "hang" => std::future::pending::<()>().await,
                "big" => {
                    let value = "x".repeat(self.big_bytes);
                    results.get().set_value(value.as_str());
                    results.get().set_found(true);
                    return Ok(());
                }
                "exit" => cell_guest::exit(3),
                _ => {}
            }
        }
        let data = self.data.borrow();
        let mut out = results.get();
        match data.get(&key) {
            Some(value) => {
                out.set_value(value.as_str());
                out.set_found(true);
            }
            None => out.set_found(false),
        }
        Ok(())
    }

    async fn put(
        self: Rc<Self>,
        params: kv::PutParams,
        _: kv::PutResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let key = params.get_key()?.to_string()?;
        let value = params.get_value()?.to_string()?;
        self.data.borrow_mut().insert(key, value);
        Ok(())
    }

    async fn len(
        self: Rc<Self>,
        _: kv::LenParams,
        mut results: kv::LenResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_count(self.data.borrow().len() as u32);
        Ok(())
    }
}

fn main() {
    let hostile = std::env::args().any(|a| a == "--hostile");
    let big_bytes = cell_guest::arg::<usize>("--big-bytes")
        .ok()
        .flatten()
        .unwrap_or(4 << 20);
    let store: kv::Client = capnp_rpc::new_client(Store {
        data: RefCell::default(),
        hostile,
        big_bytes,
    });
    cell_guest::serve(store, |_caps| async move {
        log!("kv-service: serving");
        // Serve until the parent lets go of this process (or kills it).
        std::future::pending::<()>().await;
        Ok(())
    })
}
