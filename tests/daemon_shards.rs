//! `cell serve --shards 2` through the real binary and a Rust client: jobs spread over both
//! shards and behave on the other shard exactly as on the front (wait, kill by `Job` and by
//! pid, stdout, exit codes, a loaded component, attached jobs going with their client),
//! `max-jobs` counts over both, and a random mix of runs, kills, waits and departing clients
//! across shards loses no status and leaves both tables empty; TCP clients (token login) are
//! spread over the shards as they connect.

mod common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use cell_proto::cell_capnp::job;
use cell_proto::{ExitStatus, JobCode, JobRequest, KilledBy};
use common::daemon_rpc::{connect, idle, local, run, wait, wasm, Client};
use common::{Cell, Daemon};
use serde_json::Value;

async fn pid(job: &job::Client) -> u64 {
    let reply = job.pid_request().send().promise.await.unwrap();
    u64::from(reply.get().unwrap().get_pid())
}

/// The shard `ps` says the process `pid` is on.
fn shard_of(daemon: &Daemon, pid: u64) -> u64 {
    let rows = daemon.ps();
    rows.iter()
        .find(|r| r["pid"] == pid)
        .and_then(|r| r["shard"].as_u64())
        .unwrap_or_else(|| panic!("pid {pid} not in ps: {rows:?}"))
}

/// Polls `ps` until `pid` is gone.
fn gone(daemon: &Daemon, pid: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.ps().iter().any(|r| r["pid"] == pid) {
        assert!(Instant::now() < deadline, "pid {pid} still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn jobs_spread_over_shards_and_behave_the_same_on_each() {
    let daemon = Daemon::start(&["--shards", "2", "--max-jobs", "4"]);
    let sleeper = wasm("hostile");
    local(async {
        let client = connect(&daemon.sock).await;
        // Idle, the front keeps a job (no hop); busy, the next one goes to the idle shard.
        let a = run(&client, &sleeper, &["sleep"], false).await;
        let b = run(&client, &sleeper, &["sleep"], false).await;
        let (pa, pb) = (pid(&a).await, pid(&b).await);
        assert_eq!((shard_of(&daemon, pa), shard_of(&daemon, pb)), (0, 1));
        let c = run(&client, &sleeper, &["sleep"], false).await;
        assert_eq!(
            shard_of(&daemon, pid(&c).await),
            0,
            "a tie goes to the front"
        );

        // Shard 0 holds two jobs, shard 1 one: a loaded component runs on shard 1, from the
        // front's Component, found there by its hash.
        let mut load = client.daemon.load_request();
        load.get().set_wasm(&wasm("hello"));
        let component = load.send().promise.await.unwrap();
        let component = component.get().unwrap().get_component().unwrap();
        let mut request = JobRequest::new(JobCode::<Rc<[u8]>>::Component(component.clone()));
        request.args = vec!["exit".into(), "6".into()];
        let mut req = client.daemon.run_request();
        request.write(req.get().init_request()).unwrap();
        let reply = req.send().promise.await.unwrap();
        let from_component = reply.get().unwrap().get_job().unwrap();
        assert_eq!(pid(&from_component).await % 2, 1, "pids of shard 1 are odd");
        assert_eq!(wait(&from_component).await, ExitStatus::Exited(6));
        let report = from_component
            .report_request()
            .send()
            .promise
            .await
            .unwrap();
        let report: Value =
            serde_json::from_str(report.get().unwrap().get_json().unwrap().to_str().unwrap())
                .unwrap();
        assert_eq!(report["exit_code"], 6, "{report}");

        // A plain job on shard 1 through `cell exec`: its stdout and exit code cross shards.
        let exec = daemon.exec("hello").args(&["args", "x y"]).finish();
        exec.assert_code(0);
        assert!(exec.stdout.contains("argv[2]=x y"), "{}", exec.stdout);

        // max-jobs counts over both shards: a, b, c and d run; a fifth is refused.
        let d = run(&client, &sleeper, &["sleep"], false).await;
        assert_eq!(shard_of(&daemon, pid(&d).await), 1);
        let mut request = JobRequest::new(JobCode::Wasm(sleeper.clone()));
        request.args = vec!["sleep".into()];
        let mut req = client.daemon.run_request();
        request.write(req.get().init_request()).unwrap();
        let e = req.send().promise.await.err().expect("a fifth job");
        assert!(e.extra.contains("limit: max-jobs 4 reached"), "{e}");

        // Kill on shard 1 by pid (`cell kill`) and through the Job capability.
        daemon.client("kill", &[&pb.to_string()]).assert_code(0);
        assert_eq!(wait(&b).await, ExitStatus::Killed(KilledBy::Operator));
        d.kill_request().send().promise.await.unwrap();
        assert_eq!(wait(&d).await, ExitStatus::Killed(KilledBy::Operator));

        // An attached job on shard 1 goes when its client goes.
        let other = connect(&daemon.sock).await;
        let attached = run(&other, &sleeper, &["sleep"], true).await;
        let pe = pid(&attached).await;
        assert_eq!(shard_of(&daemon, pe), 1);
        drop((attached, other));
        // Let this runtime close the dropped connection before polling ps (which blocks it).
        tokio::time::sleep(Duration::from_millis(100)).await;
        gone(&daemon, pe);

        a.kill_request().send().promise.await.unwrap();
        c.kill_request().send().promise.await.unwrap();
    });
    idle(&daemon);
}

/// A tiny deterministic generator (the test must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What one client's share of the stress did.
#[derive(Default)]
struct Done {
    waited: usize,
    killed: usize,
    /// Bit `s` is set when a job ran on shard `s` (pid parity).
    shards: u8,
}

/// One client's share of the stress: `rounds` random operations, each checked.
async fn stress(
    client: Rc<Client>,
    seed: u64,
    rounds: usize,
    hello: Rc<[u8]>,
    sleeper: Rc<[u8]>,
) -> Done {
    let mut rng = Lcg(seed);
    let mut sleeping = Vec::new();
    let mut done = Done::default();
    for _ in 0..rounds {
        match rng.below(5) {
            // Run and wait: the exit code comes back whichever shard ran it.
            0 | 1 => {
                let code = rng.below(100) as i32;
                let job = run(&client, &hello, &["exit", &code.to_string()], false).await;
                done.shards |= 1 << (pid(&job).await % 2);
                assert_eq!(wait(&job).await, ExitStatus::Exited(code));
                done.waited += 1;
            }
            // Start a sleeper, to be killed later.
            2 => sleeping.push(run(&client, &sleeper, &["sleep"], false).await),
            // Kill one, through the Daemon by pid or through its Job.
            _ => {
                if sleeping.is_empty() {
                    continue;
                }
                let i = rng.below(sleeping.len() as u64) as usize;
                let job = sleeping.swap_remove(i);
                if rng.below(2) == 0 {
                    let mut kill = client.daemon.kill_request();
                    kill.get().set_pid(pid(&job).await as u32);
                    kill.send().promise.await.unwrap();
                } else {
                    job.kill_request().send().promise.await.unwrap();
                }
                assert_eq!(wait(&job).await, ExitStatus::Killed(KilledBy::Operator));
                done.killed += 1;
            }
        }
    }
    // What is left goes with an attached twin: killed here, the rest by the client leaving.
    for job in sleeping {
        job.kill_request().send().promise.await.unwrap();
        assert_eq!(wait(&job).await, ExitStatus::Killed(KilledBy::Operator));
    }
    let attached = run(&client, &sleeper, &["sleep"], true).await;
    drop(attached);
    done
}

#[test]
fn random_runs_kills_and_departures_across_shards_lose_no_status() {
    let daemon = Daemon::start(&["--shards", "2"]);
    let (hello, sleeper) = (wasm("hello"), wasm("hostile"));
    local(async {
        let mut tasks = Vec::new();
        for seed in 0..8 {
            let client = Rc::new(connect(&daemon.sock).await);
            let (hello, sleeper) = (hello.clone(), sleeper.clone());
            tasks.push(tokio::task::spawn_local(stress(
                client, seed, 100, hello, sleeper,
            )));
        }
        let mut total = Done::default();
        for task in tasks {
            let done = task.await.unwrap();
            total.waited += done.waited;
            total.killed += done.killed;
            total.shards |= done.shards;
        }
        eprintln!(
            "{} runs waited for, {} sleepers killed",
            total.waited, total.killed
        );
        assert!(
            total.waited > 50 && total.killed > 20,
            "too little happened"
        );
        assert_eq!(total.shards, 0b11, "both shards ran jobs");
    });
    // Every client has gone: their attached sleepers with them, on both shards.
    idle(&daemon);
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn tcp_clients_are_spread_over_shards_and_log_in_there() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let tok = token.display().to_string();
    let mut daemon = Daemon::start(&[
        "-vv",
        "--shards",
        "2",
        "--listen",
        "tcp:127.0.0.1:0",
        "--token-file",
        &tok,
    ]);
    let addr = format!("tcp:{}", daemon.wait_for("cell: listening on tcp:"));
    // A connection that has not logged in yet lives on shard 0 and counts there ...
    let _waiting = std::net::TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // ... so the next client goes to shard 1, logs in there and runs its job there: no hop.
    let exec = Cell::run("hello")
        .via(&addr)
        .flags(&["--token-file", &tok])
        .args(&["exit", "5"])
        .report()
        .finish();
    exec.assert_code(5);
    let (pid, status, code) = exec.statuses()[0].clone();
    assert_eq!((status.as_str(), code), ("exited", Value::from(5)));
    assert_eq!(pid % 2, 1, "pids of shard 1 are odd: {}", exec.report());
    let mut placed = Vec::new();
    for _ in 0..2 {
        daemon.wait_for_line(|l| {
            let to = l.split("a client connection goes to shard ").nth(1);
            placed.extend(to.map(str::to_string));
            to.is_some()
        });
    }
    assert_eq!(placed, ["0", "1"], "not spread as they connected");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    Cell::run("hello")
        .via(&addr)
        .flags(&["--token-file".as_ref(), wrong.as_os_str()])
        .finish()
        .assert_code(125)
        .assert_stderr_has("denied: wrong token");
}
