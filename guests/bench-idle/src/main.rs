//! bench-idle: a cell guest with its RPC session up (one call answered, so both ends have
//! exchanged messages) that then waits forever without using any CPU. Bench section 5
//! starts thousands of these to measure what an idle SDK guest costs the host.

fn main() {
    cell_guest::run(|caps| async move {
        caps.info().await?;
        futures::future::pending::<()>().await;
        Ok(())
    })
}
