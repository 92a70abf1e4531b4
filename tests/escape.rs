//! The containment suite: each test is one way a hostile guest tried to leave its grants, or to
//! make the host hold what no limit charges (issue "Containment"), run through the real `cell`
//! on real guests (`guests/escape`, `guests/hostile`). Each asserts the exact refusal, that the
//! run still ends as it should, and where it matters the host's peak memory.
//!
//! Nothing here sends traffic off the machine: the UDP and TCP cases use 127.0.0.1 and ::1, and
//! sends to the unspecified address are refused by the policy before any packet exists.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cache_dir, cell, finish, guest, Cell, Finished};

/// `cell run [flags] escape.wasm <args>`, expecting every check inside to pass.
fn escape(flags: &[&str], args: &[&str]) -> Finished {
    let out = Cell::run("escape").flags(flags).args(args).finish();
    out.assert_code(0).assert_stderr_has(", 0 failed");
    out
}

/// The bound on `cell`'s peak RSS in the memory cases (a debug `cell` running a few guests
/// peaks around 30-40 MiB; each case would take it to hundreds of MiB if the host held what the
/// guest asked it to).
const PEAK_RSS_BOUND_KIB: u64 = 80 * 1024;

/// Runs the escape guest like [`escape`] while measuring `cell`'s peak RSS, and asserts it
/// stayed under `bound_kib`; returns the run for the caller to check how it ended.
fn escape_rss(flags: &[&str], args: &[&str], bound_kib: u64) -> Finished {
    // Compiled first, so the measured run loads it from the cache (compiling takes memory of
    // its own, which is not what these cases measure).
    let mut compile = cell();
    compile
        .arg("compile")
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg(guest("escape"));
    finish(compile).assert_code(0);
    let (out, peak) = Cell::run("escape")
        .flags(flags)
        .args(args)
        .finish_with_peak_rss();
    assert!(
        peak < bound_kib,
        "cell peaked at {peak} KiB (bound {bound_kib} KiB); stderr:\n{}",
        out.stderr
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Escapes

#[test]
fn udp_to_the_unspecified_address_is_never_sent() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let port = sink.local_addr().unwrap().port().to_string();
    escape(&["--net", "udp=0.0.0.0:*"], &["udp-unspecified", &port]);
    let mut buf = [0u8; 64];
    assert!(
        sink.recv_from(&mut buf).is_err(),
        "a datagram reached loopback without a loopback rule"
    );
}

#[test]
fn an_ipv6_listener_does_not_accept_ipv4() {
    escape(
        &[
            "--net",
            "listen=[::]:0",
            "--net",
            "connect=127.0.0.1:*",
            "--net",
            "connect=[::1]:*",
        ],
        &["dual-stack"],
    );
}

/// Every file cell writes is refused inside a writable grant, before anything runs.
#[test]
fn host_files_inside_a_writable_grant_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rw = dir.path().join("rw");
    std::fs::create_dir(&rw).unwrap();
    let rw_flag = format!("{}::/rw", rw.display());
    let inside = rw.join("out.json");
    let inside = inside.to_str().unwrap();
    for (flag, what) in [
        ("--report", "report"),
        ("--audit", "audit log"),
        ("--cache-dir", "compile cache"),
    ] {
        let out = Cell::run("child-silent")
            .own_cache()
            .flags(&["--dir-rw", &rw_flag, flag, inside])
            .finish();
        out.assert_code(125).assert_stderr_has(&format!(
            "{what} {inside} lies inside the writable directory"
        ));
    }
    // A cache directory that merely contains the grant is refused as well.
    Cell::run("child-silent")
        .own_cache()
        .flags(&["--dir-rw", &rw_flag, "--cache-dir"])
        .flag(dir.path())
        .finish()
        .assert_code(125)
        .assert_stderr_has("lies inside the writable directory");
    assert!(!Path::new(inside).exists(), "nothing was written");
}

#[test]
fn the_report_is_never_written_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.path().join("report.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    Cell::run("child-silent")
        .flag("--report")
        .flag(&link)
        .finish()
        .assert_code(125)
        .assert_stderr_has("cannot write the report")
        .assert_stderr_has("symbolic links");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn the_compile_cache_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    Cell::run("child-silent")
        .own_cache()
        .flag("--cache-dir")
        .flag(&cache)
        .finish()
        .assert_code(0);
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "cache dir mode {mode:o}");
}

// ---------------------------------------------------------------------------------------------
// The host never freezes

#[test]
fn a_huge_restrict_is_refused_with_limit() {
    escape(
        &["--net", "connect=0.0.0.0/0:*"],
        &["restrict-big", "20000"],
    );
}

#[test]
fn too_many_net_rules_on_the_command_line_are_refused() {
    let rules: Vec<String> = (0..65)
        .map(|i| format!("connect=93.184.{i}.0/24:443"))
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    Cell::run("child-silent")
        .net(&rules)
        .finish()
        .assert_code(125)
        .assert_stderr_has("policy of 65 rules (at most 64 rules per policy)");
}

/// A guest blocked on a FIFO in its `--dir` (a blocking thread that never returns) does not
/// keep cell alive past its deadline.
#[test]
fn a_blocked_file_operation_does_not_outlive_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let run = Cell::run("hello")
        .flags(&["--plain", "--timeout", "1s", "--dir"])
        .flag(format!("{}::/d", dir.path().display()))
        .args(&["read", "/d/fifo"]);
    let started = Instant::now();
    let out = run.finish();
    out.assert_code(124);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cell took {:?} to exit after its 1 s deadline",
        started.elapsed()
    );
}

/// A component whose one function takes a long time to compile (`n` blocks of arithmetic);
/// `seed` makes each one distinct, so none is found in a cache.
fn slow_component(seed: u32, n: usize) -> Vec<u8> {
    // Many small blocks with values live across them: register allocation is what takes time.
    let body = "local.get 0 if (result i32) local.get 1 i32.const 3 i32.mul else local.get 2 i32.const 5 i32.add end local.get 1 i32.add local.set 1 local.get 2 local.get 0 i32.xor local.set 2\n".repeat(n);
    let wat = format!(
        r#"(component
            (core module $m (func (export "run") (result i32) (local i32 i32 i32) {body} i32.const {seed}))
            (core instance $i (instantiate $m))
            (func $f (result (result)) (canon lift (core func $i "run")))
            (instance $cli (export "run" (func $f)))
            (export "wasi:cli/run@0.2.0" (instance $cli)))"#
    );
    wat::parse_str(&wat).expect("the slow component parses")
}

/// Six slow compiles started by pid0 right before its deadline do not keep cell alive: it exits
/// within its grace (1 s) of the deadline, and compiles run at most one per core meanwhile.
#[test]
fn slow_compiles_do_not_outlive_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        let path = dir.path().join(format!("slow{i}.wasm"));
        std::fs::write(path, slow_component(i, 150_000)).unwrap();
    }
    let run = Cell::run("escape")
        .own_cache()
        .flags(&["--timeout", "1s", "--no-cache", "--dir"])
        .flag(format!("{}::/d", dir.path().display()))
        .args(&["slow-spawns", "6"]);
    let started = Instant::now();
    let out = run.finish();
    let took = started.elapsed();
    out.assert_code(124);
    eprintln!("cell exited {took:?} after starting (deadline 1 s)");
    assert!(
        took < Duration::from_secs(20),
        "cell took {took:?} to exit after its 1 s deadline:\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// What the host holds for a guest is charged

#[test]
fn writes_to_a_child_that_never_reads_are_refused_not_parked() {
    escape_rss(&[], &["stdin-flood", "600"], PEAK_RSS_BOUND_KIB)
        .assert_code(0)
        .assert_stderr_has(", 0 failed");
}

#[test]
fn session_network_returns_one_capability() {
    // A policy of 64 rules, so that a copy per call would show.
    let rules: Vec<String> = (0..64)
        .flat_map(|i| ["--net".to_string(), format!("connect=93.184.{i}.0/24:443")])
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    escape_rss(&rules, &["network-many", "20000"], PEAK_RSS_BOUND_KIB)
        .assert_code(0)
        .assert_stderr_has(", 0 failed");
}

/// 1,000 `Process.wait` calls padded to 256 KiB each (256 MiB) that block until their child is
/// killed: the host stops reading the connection once `rpc::flow::HELD_MAX` of call messages
/// is held, so the rest never reaches it.
#[test]
fn padded_blocking_calls_are_not_held_by_the_host() {
    let out = escape_rss(
        &["--timeout", "5s"],
        &["padded-waits", "1000"],
        PEAK_RSS_BOUND_KIB,
    );
    // The host stopped reading pid0, whose round trip then never answers: it times out.
    assert!(
        matches!(out.code, Some(124)),
        "exit {:?}: {}",
        out.code,
        out.stderr
    );
}

#[test]
fn spawn_args_are_bounded() {
    escape(&[], &["big-args"]);
}

/// Every WASI resource a process holds costs the host a table entry: the table is capped.
#[test]
fn the_resource_table_is_bounded() {
    let out = Cell::run("hostile").arg("pollables").finish();
    out.assert_code(134).assert_stderr_has("cell: pid0 trapped");
    assert!(
        !out.stderr.contains("holding 10000"),
        "more than 10,000 resources were held:\n{}",
        out.stderr
    );
}

/// Children's names are kept for the report cut short, whatever their length.
#[test]
fn names_of_ended_children_are_bounded() {
    escape_rss(&[], &["long-names", "150"], PEAK_RSS_BOUND_KIB)
        .assert_code(0)
        .assert_stderr_has(", 0 failed");
}

/// A host name of 4 MiB never reaches the audit log (nor any log line).
#[test]
fn guest_strings_are_bounded_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    escape(
        &[
            "--net",
            "connect=example.com:80",
            "--audit",
            audit.to_str().unwrap(),
        ],
        &["long-host"],
    );
    let size = std::fs::metadata(&audit).unwrap().len();
    assert!(size < 64 * 1024, "the audit log grew to {size} bytes");
}

/// Names are canonical (lower case, no trailing dot) before they are matched, resolved and
/// audited: `LOCALHOST.` is `localhost`, resolved from /etc/hosts, never asked of DNS as spelled.
#[test]
fn host_names_are_canonicalised() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = std::io::Read::read_to_end(&mut conn, &mut buf);
                let _ = std::io::Write::write_all(&mut conn, &buf);
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    Cell::run("net-probe")
        .net(&[
            &format!("connect=localhost:{port}"),
            &format!("connect=127.0.0.1:{port}"),
        ])
        .flags(&["--audit", audit.to_str().unwrap()])
        .args(&["rpc-allow", "LOCALHOST.", &port.to_string()])
        .finish()
        .assert_code(0);
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"host\":\"localhost\""), "{log}");
    assert!(!log.contains("LOCALHOST"), "{log}");
}

/// A component that makes more memories than a store may have fails to start; it never
/// reserves their address space.
#[test]
fn a_component_with_too_many_memories_cannot_start() {
    let mut core = String::new();
    let mut instances = String::new();
    for i in 0..3 {
        core.push_str(&format!("(core module $m{i} (memory 1))\n"));
        instances.push_str(&format!("(core instance $i{i} (instantiate $m{i}))\n"));
    }
    let wat = format!(
        r#"(component
            {core}
            (core module $run (func (export "run") (result i32) i32.const 0))
            {instances}
            (core instance $r (instantiate $run))
            (func $f (result (result)) (canon lift (core func $r "run")))
            (instance $cli (export "run" (func $f)))
            (export "wasi:cli/run@0.2.0" (instance $cli)))"#
    );
    let wasm = wat::parse_str(&wat).expect("the test component parses");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memories.wasm");
    std::fs::write(&path, wasm).unwrap();
    let out = Cell::run_path(&path).flag("--plain").finish();
    out.assert_code(126).assert_stderr_has("memor");
}

#[test]
fn max_procs_is_bounded_by_the_address_space() {
    Cell::run("child-silent")
        .flags(&["--max-procs", "100000"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("is more than 12192");
}

/// Children's fuel is lent from their parent: together they never use more than pid0 was
/// given, however much each asks for.
#[test]
fn fuel_bounds_the_whole_tree() {
    let fuel: u64 = 1_000_000_000;
    // Children with a limit each (together more than pid0 has), then children without one.
    for each in [fuel / 3, 0] {
        let out = Cell::run("escape")
            .flags(&["--fuel", &fuel.to_string()])
            .args(&["fuel-tree", "4", &each.to_string()])
            .report()
            .finish();
        // pid0 may run dry once it has lent everything (134), or see its last spawn refused
        // for want of fuel (1): each is correct, as long as the tree stayed within its fuel.
        assert!(
            matches!(out.code, Some(0) | Some(1) | Some(134)),
            "exit {:?}: {}",
            out.code,
            out.stderr
        );
        let used: u64 = out.report()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("spinner-"))
            })
            .map(|p| p["fuel_used"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            used > 0 && used <= fuel,
            "children ({each} each) used {used} fuel under --fuel {fuel}:\n{}",
            out.stderr
        );
    }
}

/// A guest's own `wasi:sockets` count against `--max-sockets`, like its RPC sockets.
#[test]
fn wasi_sockets_count_against_max_sockets() {
    net_std_under_max_sockets(&["udp=127.0.0.1:*"], &["socket-flood", "10"])
        .assert_stderr_has("net-std: ok: bound 10 sockets, then:");
}

/// Connections a guest's own listener accepts count too.
#[test]
fn accepted_wasi_sockets_count_against_max_sockets() {
    net_std_under_max_sockets(
        &["listen=127.0.0.1:0", "connect=127.0.0.1:*"],
        &["accept-flood", "10"],
    )
    .assert_stderr_has("net-std: ok: held 10 sockets, then accept:");
}

/// `net-std <args>` as a plain pid0 under `--max-sockets 10` and the given `--net` rules,
/// expected to exit 0.
fn net_std_under_max_sockets(rules: &[&str], args: &[&str]) -> Finished {
    let out = Cell::run("net-std")
        .flags(&["--plain", "--max-sockets", "10"])
        .net(rules)
        .args(args)
        .finish();
    out.assert_code(0);
    out
}

// ---------------------------------------------------------------------------------------------
// Smaller defects

#[test]
fn a_second_stdout_handle_is_the_same_stream() {
    escape(&[], &["stdout-twice"]);
}

#[test]
fn forwarded_stderr_cannot_forge_host_lines_or_drive_the_terminal() {
    let out = escape(&[], &["forge-stderr"]);
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains('\x1b'),
        "control characters reached the host's stderr:\n{:?}",
        out.stderr
    );
    out.assert_stderr_has("child\\u{d}[pid 0] cell: forged by a child\\u{1b}]0;pwned\\u{7}");
}
