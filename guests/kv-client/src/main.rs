//! kv-client: a child that uses the `kv` service its parent granted it (`Session.services`),
//! never knowing which process serves it. Each argument pair is one step:
//!
//! - `put K=V`    store V under K
//! - `expect K=V` read K and check it is V
//! - `absent K`   check K is not stored
//!
//! Prints `kv-client: …` lines and exits 0 when every step held, 1 otherwise.

use anyhow::{bail, Context as _, Result};
use cell_guest::log;
use kv_service::kv_capnp::kv;

async fn get(kv: &kv::Client, key: &str) -> Result<Option<String>> {
    let mut request = kv.get_request();
    request.get().set_key(key);
    let response = request.send().promise.await.context("kv.get")?;
    let r = response.get()?;
    Ok(if r.get_found() {
        Some(r.get_value()?.to_string()?)
    } else {
        None
    })
}

async fn step(kv: &kv::Client, op: &str, arg: &str) -> Result<()> {
    let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
    match op {
        "put" => {
            let mut request = kv.put_request();
            request.get().set_key(key);
            request.get().set_value(value);
            request.send().promise.await.context("kv.put")?;
        }
        "expect" => match get(kv, key).await? {
            Some(v) if v == value => {}
            other => bail!("{key} is {other:?}, expected {value:?}"),
        },
        "absent" => {
            if let Some(v) = get(kv, key).await? {
                bail!("{key} is {v:?}, expected absent");
            }
        }
        other => bail!("unknown step {other:?}"),
    }
    Ok(())
}

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let kv: kv::Client = caps.service("kv").await?;
        for pair in args.chunks(2) {
            let [op, arg] = pair else {
                bail!("steps come in pairs: {pair:?}");
            };
            step(&kv, op, arg)
                .await
                .with_context(|| format!("{op} {arg}"))?;
            log!("kv-client: {op} {arg}");
        }
        Ok(())
    })
}
