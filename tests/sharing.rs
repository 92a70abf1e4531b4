//! Capabilities that flow between guests, through the real `cell` binary and real guests:
//! guest services (`kv-pid0`: a key-value service shared by two children, and services that
//! misbehave) and directories for children (`dirs-pid0`: a read-only `/data` for one child, a
//! writable `/out` for another, and every way up refused).

mod common;

use std::path::Path;

use common::Cell;
use serde_json::Value;

#[test]
fn a_service_is_shared_by_two_children_and_dies_with_its_process() {
    let done = Cell::run("kv-pid0").finish();
    assert!(!done.stderr.contains("fail:"), "{}", done.stderr);
    done.assert_code(0)
        .assert_stderr_has("ok: client B read what A stored")
        .assert_stderr_has("ok: a guest-made service is refused")
        .assert_stderr_has(
            "ok: calls after the service was killed (killed by its parent) are refused: ",
        )
        .assert_stderr_has("--- 6 passed, 0 failed");
}

/// A service that never answers stalls only that call; one answering with more than
/// `--max-message-size` is stopped as a protocol violation and its callers get `dead`; one
/// exiting mid-call fails the call with `dead`; calls through the proxy count against the
/// caller's call gate. The host stays small throughout.
#[test]
fn misbehaving_services_fail_only_their_own_calls() {
    let (done, peak_kib) = Cell::run("kv-pid0")
        .flags(&[
            "--max-message-size",
            "2MiB",
            "--max-outstanding-calls",
            "16",
        ])
        .arg("hostile")
        .finish_with_peak_rss();
    assert!(!done.stderr.contains("fail:"), "{}", done.stderr);
    done.assert_code(0)
        .assert_stderr_has("ok: a sibling uses the service meanwhile")
        .assert_stderr_has("ok: a huge answer stops the service (protocol violation")
        .assert_stderr_has("ok: a service exiting mid-call (exited with code 3)")
        .assert_stderr_has("refused by the caller's gate")
        .assert_stderr_has("ok: once they are cancelled, calls go through again")
        .assert_stderr_has("--- 6 passed, 0 failed");
    assert!(peak_kib < 512 * 1024, "host peak RSS {peak_kib} KiB");
}

/// The tree `dirs-pid0` expects under `--dir-rw ROOT::/work`.
fn work_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("data/input.txt"), "hello").unwrap();
    std::fs::write(root.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("data/escape")).unwrap();
    std::os::unix::fs::symlink("..", root.join("data/up")).unwrap();
    t
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn each_child_sees_exactly_the_directories_it_was_given() {
    let tree = work_tree();
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.jsonl");
    let grant = format!("{}::/work", tree.path().display());
    let done = Cell::run("dirs-pid0")
        .flags(&["--dir-rw", &grant, "--audit"])
        .flag(&audit)
        .finish();
    assert!(!done.stderr.contains("fail:"), "{}", done.stderr);
    done.assert_code(0)
        .assert_stderr_has("ok: child A sees only a read-only /data")
        .assert_stderr_has("ok: child B sees only a writable /out")
        .assert_stderr_has("ok: a guest-made Directory is refused")
        .assert_stderr_has("a process holds at most 64 directories")
        .assert_stderr_has("ok: directories dropped free their slots");
    // What the children did, seen from the host.
    let root = tree.path();
    assert_eq!(
        std::fs::read_to_string(root.join("out/result.txt")).unwrap(),
        "from B"
    );
    assert!(
        !root.join("data/new.txt").exists(),
        "the read-only child wrote"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("secret.txt")).unwrap(),
        "secret"
    );
    // Every grant and every narrowing is audited.
    let lines = audit_lines(&audit);
    let has = |op: &str, host: &str, allowed: bool, rule_part: &str| {
        lines.iter().any(|l| {
            l["op"] == op
                && l["host"] == host
                && l["allowed"] == allowed
                && l["rule"].as_str().unwrap_or("").contains(rule_part)
        })
    };
    assert!(has("dir", "/work", true, "rw "), "{lines:?}");
    assert!(has("dir", "/data", true, "ro "), "{lines:?}");
    assert!(has("dir", "/out", true, "rw "), "{lines:?}");
    assert!(has("dir-open", "out", true, "rw "), "{lines:?}");
    assert!(has("dir-open", "..", false, ""), "{lines:?}");
}
