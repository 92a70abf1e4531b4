//! The daemon under load and abuse, driven by a Rust client in the test (the schema's own
//! bindings over the real socket): 1,000 clients that connect, run and go away (some
//! mid-job, some attached) leave the daemon's memory and descriptors flat; 100 concurrent
//! clients × 100 jobs lose no status; garbage and oversized frames on the socket end only
//! that connection.

mod common;

use std::io::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cell_proto::{ExitStatus, JobCode, JobRequest};
use common::daemon_rpc::{connect, idle, local, run, wait, wasm};
use common::{guest, Daemon};

#[test]
fn a_thousand_clients_come_and_go_and_nothing_leaks() {
    let daemon = Daemon::start(&[]);
    let hello = wasm("hello");
    let sleeper = wasm("hostile");
    let cycle = |i: usize| {
        let (hello, sleeper, sock) = (hello.clone(), sleeper.clone(), daemon.sock.clone());
        async move {
            let client = connect(&sock).await;
            match i % 4 {
                // Waits for its job.
                0 | 1 => {
                    let job = run(&client, &hello, &["exit", "3"], false).await;
                    assert_eq!(wait(&job).await, ExitStatus::Exited(3));
                }
                // Goes away while its job may still run: the job finishes anyway.
                2 => drop(run(&client, &hello, &["exit", "0"], false).await),
                // Attached to a job that never ends: the job goes with the client.
                _ => drop(run(&client, &sleeper, &["sleep"], true).await),
            }
        }
    };
    let cycles = |range: std::ops::Range<usize>| {
        local(async {
            for i in range {
                cycle(i).await;
            }
        })
    };
    cycles(0..200);
    idle(&daemon);
    let (rss0, fds0) = daemon.rss_and_fds();
    cycles(200..1000);
    idle(&daemon);
    let (rss1, fds1) = daemon.rss_and_fds();
    eprintln!("after 200 clients: {rss0} KiB, {fds0} fds; after 1000: {rss1} KiB, {fds1} fds");
    assert!(
        fds1 <= fds0 + 2,
        "descriptors grew from {fds0} to {fds1} over 800 clients"
    );
    assert!(
        rss1 <= rss0 + 24 * 1024,
        "resident memory grew from {rss0} KiB to {rss1} KiB over 800 clients"
    );
}

#[test]
fn a_hundred_clients_run_a_hundred_jobs_each_and_lose_no_status() {
    let daemon = Daemon::start(&["--max-jobs", "128"]);
    let hello = wasm("hello");
    let sock = daemon.sock.clone();
    let wrong = local(async move {
        let mut clients = Vec::new();
        for c in 0..100usize {
            let (hello, sock) = (hello.clone(), sock.clone());
            clients.push(tokio::task::spawn_local(async move {
                let client = connect(&sock).await;
                let mut wrong = 0;
                for j in 0..100usize {
                    let code = ((c * 100 + j) % 200) as i32;
                    let job = run(&client, &hello, &["exit", &code.to_string()], false).await;
                    if wait(&job).await != ExitStatus::Exited(code) {
                        wrong += 1;
                    }
                }
                wrong
            }));
        }
        let mut wrong = 0;
        for c in clients {
            wrong += c.await.unwrap();
        }
        wrong
    });
    assert_eq!(wrong, 0, "statuses lost or wrong");
    idle(&daemon);
}

#[test]
fn garbage_and_giant_frames_end_only_their_own_connection() {
    let daemon = Daemon::start(&[]);
    let hello = wasm("hello");
    // Garbage: not a Cap'n Proto frame at all.
    let mut garbage = std::os::unix::net::UnixStream::connect(&daemon.sock).unwrap();
    let _ = garbage.write_all(&[0xff; 4096]);
    // A frame claiming 4 GiB segments: refused from its header, before anything is allocated.
    let mut giant = std::os::unix::net::UnixStream::connect(&daemon.sock).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&0u32.to_le_bytes()); // one segment
    header.extend_from_slice(&0x1fff_ffffu32.to_le_bytes()); // of ~4 GiB
    let _ = giant.write_all(&header);
    // Both are closed by the daemon (after at most an abort message). Closed with garbage it
    // never read still pending, the connection may end in a reset instead of an end of file:
    // closed either way (a timeout would mean it was kept).
    for mut s in [garbage, giant] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let ended = std::io::Read::read_to_end(&mut s, &mut rest);
        let closed = match &ended {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(
            closed && rest.len() < 4096,
            "the daemon kept a connection that sent garbage: {ended:?}, {} bytes",
            rest.len()
        );
    }
    // Everyone else is served as before, and the daemon holds no giant buffer.
    local(async {
        let client = connect(&daemon.sock).await;
        let job = run(&client, &hello, &["exit", "9"], false).await;
        assert_eq!(wait(&job).await, ExitStatus::Exited(9));
    });
    let (rss, _) = daemon.rss_and_fds();
    assert!(rss < 512 * 1024, "the daemon holds {rss} KiB");
}

#[test]
fn a_client_is_held_to_its_call_bound() {
    let daemon = Daemon::start(&["--max-outstanding-calls", "16"]);
    let sleeper = wasm("hostile");
    local(async {
        let client = connect(&daemon.sock).await;
        let job = run(&client, &sleeper, &["sleep"], true).await;
        // 40 waits that cannot end: the first ones take every slot, the rest are refused.
        let waits: Vec<_> = (0..40).map(|_| job.wait_request().send().promise).collect();
        let mut refused = 0;
        let mut pending = Vec::new();
        for w in waits {
            match tokio::time::timeout(Duration::from_millis(300), w).await {
                Ok(Err(e)) if e.extra.contains("limit: max-outstanding-calls 16") => refused += 1,
                Ok(other) => panic!("a wait ended: {:?}", other.map(|_| ())),
                Err(_) => pending.push(()),
            }
        }
        assert!(refused >= 24, "only {refused} of 40 refused");
        assert!(!pending.is_empty());
    });
    // The attached job went with the client; the daemon is idle again.
    idle(&daemon);
}

#[test]
fn a_job_runs_from_a_path_in_the_ceiling_or_a_loaded_component() {
    let root = tempfile::tempdir().unwrap();
    let jobs = root.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::copy(guest("hello"), jobs.join("hello.wasm")).unwrap();
    let jobs_s = jobs.display().to_string();
    let daemon = Daemon::start(&["--dir", &jobs_s]);
    local(async {
        let client = connect(&daemon.sock).await;
        let start = |code: JobCode<Rc<[u8]>>| {
            let mut request = JobRequest::new(code);
            request.args = vec!["exit".into(), "6".into()];
            let mut req = client.daemon.run_request();
            request.write(req.get().init_request()).unwrap();
            req.send().promise
        };
        // A path inside the ceiling's directory: read by the daemon.
        let path = jobs.join("hello.wasm").display().to_string();
        let job = start(JobCode::Path(path)).await.unwrap();
        let job = job.get().unwrap().get_job().unwrap();
        assert_eq!(wait(&job).await, ExitStatus::Exited(6));
        // Outside it, or escaping it: refused.
        let outside = guest("hello").display().to_string();
        let e = start(JobCode::Path(outside)).await.err().unwrap();
        assert!(e.extra.contains("denied:"), "{e}");
        let escape = format!("{jobs_s}/../jobs/hello.wasm");
        let e = start(JobCode::Path(escape)).await.err().unwrap();
        assert!(e.extra.contains("bad-request:"), "{e}");
        // A component loaded once, run twice.
        let mut load = client.daemon.load_request();
        load.get().set_wasm(&wasm("hello"));
        let component = load.send().promise.await.unwrap();
        let component = component.get().unwrap().get_component().unwrap();
        for _ in 0..2 {
            let job = start(JobCode::Component(component.clone())).await.unwrap();
            let job = job.get().unwrap().get_job().unwrap();
            assert_eq!(wait(&job).await, ExitStatus::Exited(6));
        }
        // Its spawn is not for clients.
        let e = component
            .spawn_request()
            .send()
            .promise
            .await
            .err()
            .unwrap();
        assert!(e.extra.contains("unsupported:"), "{e}");
    });
}

/// An event sink that takes `delay` to answer each push, counting what it saw and lost.
struct SlowSink {
    delay: Duration,
    seen: Rc<std::cell::Cell<u64>>,
    lost: Rc<std::cell::Cell<u64>>,
}

impl cell_proto::cell_capnp::event_sink::Server for SlowSink {
    async fn push(
        self: capnp::capability::Rc<Self>,
        params: cell_proto::cell_capnp::event_sink::PushParams,
        _: cell_proto::cell_capnp::event_sink::PushResults,
    ) -> Result<(), capnp::Error> {
        let lost = params.get()?.get_event()?.get_lost();
        self.seen.set(self.seen.get() + 1);
        self.lost.set(self.lost.get() + lost);
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

#[test]
fn a_slow_event_consumer_loses_events_and_never_slows_the_daemon() {
    let daemon = Daemon::start(&[]);
    let hello = wasm("hello");
    local(async {
        let watcher = connect(&daemon.sock).await;
        let (seen, lost) = (Rc::default(), Rc::default());
        let sink: cell_proto::cell_capnp::event_sink::Client = capnp_rpc::new_client(SlowSink {
            delay: Duration::from_millis(200),
            seen: Rc::clone(&seen),
            lost: Rc::clone(&lost),
        });
        let mut req = watcher.daemon.events_request();
        req.get().set_sink(sink);
        let reply = req.send().promise.await.unwrap();
        let _subscription = reply.get().unwrap().get_subscription().unwrap();
        // 700 jobs make 1,400 events, more than the daemon's ring holds, while the sink takes
        // a fifth of a second for each.
        let client = connect(&daemon.sock).await;
        let t = Instant::now();
        for _ in 0..700 {
            let job = run(&client, &hello, &[], false).await;
            assert_eq!(wait(&job).await, ExitStatus::Exited(0));
        }
        let took = t.elapsed();
        // The jobs ran at the daemon's pace, not the sink's (700 × 0.2 s would be 140 s).
        assert!(took < Duration::from_secs(60), "700 jobs took {took:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(seen.get() < 100, "the sink saw {} events", seen.get());
        assert!(lost.get() > 300, "only {} events reported lost", lost.get());
    });
}
