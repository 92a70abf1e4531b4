//! dirs-pid0: directories for children. pid0 holds one writable directory, `/work` (run it
//! with `--dir-rw HOST::/work`, HOST holding `data/input.txt` = `hello`, an empty `out/`, a
//! `secret.txt` and the symlinks `data/escape -> ../secret.txt` and `data/up -> ..`); it
//! narrows it and gives one child a read-only `/data` and another a writable `/out`, each of
//! which checks it sees exactly its own (`dirs-child`). Then the attenuation edges: `..`,
//! absolute paths and symlinks out are refused by `Directory.open`, read-only stays
//! read-only, and a guest-made Directory cannot be granted.
//!
//! Each check prints `ok: …`/`fail: …`; the process exits 0 only if all held.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cell_guest::cell_capnp::directory;
use cell_guest::{Caps, Directory, Executor, ExitStatus, Reason};
use cell_testkit::{err_text, failed_with, Report};

static DIRS_CHILD: &[u8] = cell_testkit::embed!("dirs-child");

const WAIT: Duration = Duration::from_secs(60);

async fn child(
    executor: &Executor,
    dirs: &[(&Directory, &str)],
    checks: &[&str],
) -> Result<ExitStatus> {
    let mut spawn = executor.spawn(DIRS_CHILD).name("dirs-child");
    for (dir, path) in dirs {
        spawn = spawn.grant_dir(dir, *path);
    }
    let process = spawn.args(checks.iter().copied()).start().await?;
    cell_guest::timeout(WAIT, process.wait())
        .await
        .context("waiting for dirs-child")?
}

struct Impostor;
impl directory::Server for Impostor {}

async fn checks(caps: &Caps, report: &mut Report) -> Result<()> {
    let executor = caps.executor().await?;
    let dirs = caps.dirs().await?;
    let work = dirs
        .iter()
        .find(|d| d.path == "/work")
        .context("pid0 needs --dir-rw HOST::/work")?
        .dir
        .clone();
    report.check(work.writable().await?, "/work is writable");

    let data = work.open("data").await?.read_only().await?;
    let out = work.open("out").await?;
    report.check(
        !data.writable().await?,
        "data, narrowed to read-only, is read-only",
    );
    let data_sub = data.open(".").await?;
    report.check(
        !data_sub.writable().await?,
        "a subtree of a read-only directory is read-only",
    );

    let a = child(
        &executor,
        &[(&data, "/data")],
        &[
            "dirs 1",
            "read /data/input.txt=hello",
            "no-write /data/new.txt",
            "no-read /data/escape",
            "no-read /data/up/secret.txt",
            "no-read /out/result.txt",
            "no-read /work/secret.txt",
        ],
    )
    .await?;
    report.check(
        a == ExitStatus::Exited(0),
        format!("child A sees only a read-only /data: {a}"),
    );
    let b = child(
        &executor,
        &[(&out, "/out")],
        &[
            "dirs 1",
            "write /out/result.txt=from B",
            "read /out/result.txt=from B",
            "no-read /data/input.txt",
            "no-read /out/../secret.txt",
        ],
    )
    .await?;
    report.check(
        b == ExitStatus::Exited(0),
        format!("child B sees only a writable /out: {b}"),
    );

    for bad in ["..", "/etc", "data/../..", ""] {
        let r = work.open(bad).await;
        report.check(
            failed_with(&r, Reason::BadRequest),
            format!("open({bad:?}) is refused: {}", err_text(&r)),
        );
    }
    let r = work.open("data/escape").await;
    report.check(
        failed_with(&r, Reason::Io),
        format!(
            "open(\"data/escape\") (a file outside data) fails: {}",
            err_text(&r)
        ),
    );
    // data/up -> .. is /work itself: inside /work's tree, so /work may follow it ...
    let r = work.open("data/up").await;
    report.check(
        r.is_ok(),
        format!("a symlink staying inside is followed: {}", err_text(&r)),
    );
    // ... but from data it leads out, and nothing leads out.
    let r = data.open("up").await;
    report.check(
        failed_with(&r, Reason::Io),
        format!("a symlink to the parent is no way up: {}", err_text(&r)),
    );

    // Each Directory held is a host descriptor: a process holds at most 64 at once.
    let mut held = Vec::new();
    let refused = loop {
        match work.open("data").await {
            Ok(d) => held.push(d),
            Err(e) => break e,
        }
        if held.len() > 200 {
            break anyhow::anyhow!("no limit after 200 directories");
        }
    };
    report.check(
        cell_guest::reason(&refused) == Some(Reason::Limit) && held.len() >= 50,
        format!(
            "holding {} more directories, the next open is refused: {refused:#}",
            held.len()
        ),
    );
    drop(held);
    cell_guest::sleep(Duration::from_millis(100)).await;
    let freed = work.open("data").await;
    report.check(freed.is_ok(), "directories dropped free their slots");

    let impostor = Directory::new(cell_guest::capnp_rpc::new_client(Impostor));
    let forged = executor
        .spawn(DIRS_CHILD)
        .grant_dir(&impostor, "/fake")
        .start()
        .await;
    report.check(
        failed_with(&forged, Reason::BadGrant),
        format!("a guest-made Directory is refused: {}", err_text(&forged)),
    );
    let bad_path = executor
        .spawn(DIRS_CHILD)
        .grant_dir(&data, "/x/../..")
        .start()
        .await;
    report.check(
        failed_with(&bad_path, Reason::BadRequest),
        format!("a guest path with '..' is refused: {}", err_text(&bad_path)),
    );
    Ok(())
}

fn main() {
    cell_guest::run(|caps| async move {
        let mut report = Report::default();
        if let Err(e) = checks(&caps, &mut report).await {
            report.fail(format!("{e:#}"));
        }
        report.finish()
    })
}
