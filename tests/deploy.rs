//! `deploy/`: the Kubernetes manifests, the Nomad job and the container recipe, checked as far
//! as a machine without a cluster allows. Each file must parse; the names and ports that tie
//! its parts together (container ports, probes, Services, the scrape annotation, volumes and
//! their mounts, the image's user) must agree; every flag must be one `cell serve` has; and
//! then the daemon is booted for real from the manifest's own command line — its mounts laid
//! out in a temporary root, the ConfigMap's and templates' files written where they would be
//! mounted, certificates made by the test where the Secret would be — and a client with the
//! manifest's CI identity runs a job over mutual TLS within that identity's ceiling.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::pki::{Ca, Pair};
use common::{cell, Cell, Daemon};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `--flag` `cell serve --help` documents.
fn serve_flags() -> BTreeSet<String> {
    let out = cell().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The value after `flag` in `args` (the last one, as clap takes it), if any.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .rev()
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// The port of an `ADDR:PORT` (or `tls:ADDR:PORT`) value.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The absolute paths among a command line's values (`/x`, and the `/x` of `NAME=/x`).
fn paths_in(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| {
            let value = a.split_once('=').map_or(a.as_str(), |(_, v)| v);
            value.starts_with('/').then(|| value.to_string())
        })
        .collect()
}

/// The checks both orchestrators' command lines share: `serve` and nothing but `cell serve`'s
/// flags, mutual TLS on the RPC port, public metrics on the metrics port.
fn check_serve_args(what: &str, args: &[String], rpc: u16, metrics: u16) {
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{what}");
    let known = serve_flags();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            known.contains(a.as_str()),
            "{what}: `cell serve` has no {a}"
        );
    }
    let listen = flag_value(args, "--listen").expect("--listen");
    assert!(listen.starts_with("tls:"), "{what}: {listen}");
    assert_eq!(port_of(listen), rpc, "{what}: --listen vs the RPC port");
    assert!(
        flag_value(args, "--client-ca").is_some(),
        "{what}: mutual TLS"
    );
    let scrape = flag_value(args, "--metrics").expect("--metrics");
    assert_eq!(
        port_of(scrape),
        metrics,
        "{what}: --metrics vs the metrics port"
    );
    assert!(args.iter().any(|a| a == "--metrics-public"), "{what}");
}

/// The command line as it runs here: every absolute path under `root`, every wildcard address
/// on an ephemeral loopback port, and no `serve` (the harness adds it).
fn localize(args: &[String], root: &Path) -> Vec<String> {
    let under = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
    args[1..]
        .iter()
        .map(|a| match a.split_once('=') {
            Some((name, v)) if v.starts_with('/') => format!("{name}={}", under(v)),
            _ if a.starts_with('/') => under(a),
            _ => match a.split_once("0.0.0.0:") {
                Some((scheme, _port)) => format!("{scheme}127.0.0.1:0"),
                None => a.clone(),
            },
        })
        .collect()
}

/// Boots `cell serve` with the localized command line and runs jobs as the clients the
/// configuration names: `ci-runner` gets its own ceiling, anyone else the default one, and
/// `cell-node` no network.
fn boot_and_use(what: &str, args: &[String], root: &Path, pki: &Pki) {
    let flags = localize(args, root);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&flags);
    let line = daemon.wait_for("cell: listening on tls:");
    let addr = format!("tls:{}", line.trim_end_matches(" (mutual TLS)"));
    let url = daemon.wait_for("cell: metrics on http://");
    let scrape = common::http::request(
        url.trim_end_matches("/metrics"),
        "GET",
        "/metrics",
        &[],
        b"",
    );
    assert_eq!(
        scrape.status, 200,
        "{what}: the liveness probe's GET /metrics"
    );

    let exec = |who: &Pair, guest: &str| {
        Cell::run(guest)
            .via(&addr)
            .flags(&["--tls-ca", &pki.ca.pem.display().to_string()])
            .flags(&who.flags())
    };
    let out = exec(&pki.ci, "hello")
        .flags(&["--max-memory", "512M"])
        .args(&["exit", "3"])
        .report()
        .finish();
    out.assert_code(3);
    assert_eq!(out.report()["client"], "ci-runner", "{what}");
    exec(&pki.other, "hello")
        .flags(&["--max-memory", "512M"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("ceiling");
    exec(&pki.node, "hello")
        .flags(&["--net", "connect=127.0.0.1:80"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("grants no network");
    daemon.stop().assert_code(0);

    // The compile cache is the daemon's own directory inside the writable volume.
    let cache = root.join(
        flag_value(args, "--cache-dir")
            .expect("--cache-dir")
            .trim_start_matches('/'),
    );
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{what}: {}", cache.display());
}

/// The test's certificates: a CA, the node's server certificate, and three clients.
struct Pki {
    ca: Ca,
    server: Pair,
    ci: Pair,
    other: Pair,
    node: Pair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::new(dir, "ours");
        Pki {
            server: ca.server("server"),
            ci: ca.client("ci", "ci-runner", &[]),
            other: ca.client("other", "someone", &[]),
            node: ca.client("node", "cell-node", &[]),
            ca,
        }
    }

    /// What a TLS Secret or template file named `name` holds.
    fn file(&self, name: &str) -> PathBuf {
        match name {
            "tls.crt" => self.server.cert.clone(),
            "tls.key" => self.server.key.clone(),
            "ca.crt" => self.ca.pem.clone(),
            other => panic!("no test certificate for {other}"),
        }
    }
}

fn install(from: &Path, to: &Path, mode: u32) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(to: &Path, text: &str) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(to, text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Every document of every manifest `kustomization.yaml` lists, by kind.
fn kubernetes() -> BTreeMap<String, Vec<Yaml>> {
    let kustomization = &YamlLoader::load_from_str(&read("deploy/kubernetes/kustomization.yaml"))
        .expect("kustomization.yaml")[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_vec()
        .expect("resources")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        on_disk,
        "kustomization.yaml lists every manifest"
    );
    let mut by_kind: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    for file in listed {
        let text = read(&format!("deploy/kubernetes/{file}"));
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for doc in docs {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no kind"));
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{file}: no apiVersion"
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{file}: no name"
            );
            by_kind.entry(kind.to_string()).or_default().push(doc);
        }
    }
    by_kind
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A named port (`port: rpc`) or a number, as a container port name.
fn port_name(y: &Yaml, ports: &BTreeMap<String, u16>) -> String {
    match (y.as_str(), y.as_i64()) {
        (Some(name), _) => name.to_string(),
        (None, Some(n)) => ports
            .iter()
            .find(|(_, p)| i64::from(**p) == n)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| panic!("port {n} is not a container port")),
        _ => panic!("bad port {y:?}"),
    }
}

#[test]
fn the_kubernetes_daemonset_boots_as_written_and_its_parts_agree() {
    let k8s = kubernetes();
    let ds = &k8s["DaemonSet"][0];
    let pod = &ds["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(ds["spec"]["selector"]["matchLabels"], *labels);
    let container = &pod["spec"]["containers"][0];
    let args = strs(&container["args"]);
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_vec()
        .expect("ports")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("named port").to_string();
            (
                name,
                p["containerPort"].as_i64().expect("containerPort") as u16,
            )
        })
        .collect();
    check_serve_args("DaemonSet", &args, ports["rpc"], ports["metrics"]);

    // Probes, Services, the NetworkPolicy and the scrape annotation name ports that exist.
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    let scraped: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(scraped, ports["metrics"]);
    assert_eq!(
        port_name(&container["readinessProbe"]["tcpSocket"]["port"], &ports),
        "rpc"
    );
    let live = &container["livenessProbe"]["httpGet"];
    assert_eq!(port_name(&live["port"], &ports), "metrics");
    assert_eq!(live["path"].as_str(), Some("/metrics"));
    for svc in &k8s["Service"] {
        assert_eq!(svc["spec"]["selector"], *labels);
        for p in svc["spec"]["ports"].as_vec().unwrap() {
            assert_eq!(
                port_name(&p["targetPort"], &ports),
                "rpc",
                "clients reach the RPC port"
            );
        }
    }
    let policy = &k8s["NetworkPolicy"][0]["spec"];
    assert_eq!(policy["podSelector"]["matchLabels"], *labels);
    for rule in policy["ingress"].as_vec().unwrap() {
        for p in rule["ports"].as_vec().unwrap() {
            port_name(&p["port"], &ports);
        }
    }

    // The image's user, and a root filesystem nothing is written to.
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsUser"].as_i64(), Some(i64::from(image().uid)));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );

    // Lay the mounts out under a temporary root: the ConfigMap's keys, the Secret's files
    // (certificates made here), an emptyDir as Kubernetes makes it (mode 0777).
    let root = tempfile::tempdir().unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let config = &k8s["ConfigMap"][0];
    let volumes: BTreeMap<&str, &Yaml> = pod["spec"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let key = |k: &str| {
        config["data"][k]
            .as_str()
            .unwrap_or_else(|| panic!("the ConfigMap has no {k}"))
            .to_string()
    };
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_vec().unwrap() {
        let at = mount["mountPath"].as_str().unwrap();
        let host = root.path().join(at.trim_start_matches('/'));
        let volume = volumes[mount["name"].as_str().unwrap()];
        let writable = !mount["readOnly"].as_bool().unwrap_or(false);
        mounts.push((at.to_string(), writable));
        if let Some(map) = volume["configMap"].as_hash() {
            let name = map[&Yaml::String("name".into())].as_str().unwrap();
            assert_eq!(name, config["metadata"]["name"].as_str().unwrap());
            if let Some(sub) = mount["subPath"].as_str() {
                write(&host, &key(sub));
            } else {
                for item in volume["configMap"]["items"].as_vec().unwrap() {
                    let to = host.join(item["path"].as_str().unwrap());
                    write(&to, &key(item["key"].as_str().unwrap()));
                }
            }
        } else if volume["secret"].as_hash().is_some() {
            let files: Vec<String> = paths_in(&args)
                .into_iter()
                .filter_map(|p| p.strip_prefix(&format!("{at}/")).map(str::to_string))
                .collect();
            assert!(!files.is_empty(), "the Secret's mount is used");
            let readme = read("deploy/kubernetes/README.md");
            let secret = volume["secret"]["secretName"].as_str().unwrap();
            assert!(
                readme.contains(&format!("secret generic {secret}")),
                "README makes {secret}"
            );
            for f in files {
                assert!(readme.contains(&format!("--from-file={f}")), "README: {f}");
                install(&pki.file(&f), &host.join(&f), 0o400);
            }
        } else {
            assert!(volume["emptyDir"].as_hash().is_some(), "{volume:?}");
            std::fs::create_dir_all(&host).unwrap();
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
    }
    // Every path the command line names is mounted; the cache on a writable one.
    for p in paths_in(&args) {
        assert!(
            mounts
                .iter()
                .any(|(at, _)| p == *at || p.starts_with(&format!("{at}/"))),
            "{p}"
        );
    }
    let cache = flag_value(&args, "--cache-dir").unwrap();
    assert!(
        mounts
            .iter()
            .any(|(at, w)| *w && cache.starts_with(&format!("{at}/"))),
        "{cache}"
    );

    boot_and_use("DaemonSet", &args, root.path(), &pki);
}

// ---------------------------------------------------------------------------------------------
// Nomad

/// A block or list of blocks (hcl-rs makes repeated blocks a list), as a list.
fn blocks(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    match v {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Null => Vec::new(),
        one => vec![one],
    }
}

#[test]
fn the_nomad_system_job_boots_as_written_and_its_parts_agree() {
    let text = read("deploy/nomad/cell.nomad.hcl");
    let job: serde_json::Value =
        hcl::eval::from_str(&text, &hcl::eval::Context::new()).expect("cell.nomad.hcl");
    let job = &job["job"]["cell"];
    assert_eq!(job["type"], "system", "one daemon per client node");
    let group = &job["group"]["cell"];
    let ports: BTreeMap<String, u16> = group["network"]["port"]
        .as_object()
        .expect("ports")
        .iter()
        .map(|(name, p)| (name.clone(), p["static"].as_u64().expect("static") as u16))
        .collect();
    let services = blocks(&group["service"]);
    for svc in &services {
        assert!(ports.contains_key(svc["port"].as_str().unwrap()), "{svc}");
        assert!(!blocks(&svc["check"]).is_empty(), "{svc}: health-checked");
    }
    let scraped = services
        .iter()
        .find(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "prometheus"))
        })
        .expect("a service tagged for Prometheus");
    assert_eq!(scraped["port"], "metrics");
    assert_eq!(blocks(&scraped["check"])[0]["path"], "/metrics");

    let task = &group["task"]["cell"];
    assert_eq!(task["driver"], "docker");
    let config = &task["config"];
    let mapped: BTreeSet<String> = serde_json::from_value(config["ports"].clone()).unwrap();
    assert_eq!(mapped, ports.keys().cloned().collect());
    assert_eq!(
        config["image"].as_str().map(|i| i.starts_with("cell:")),
        Some(true)
    );
    let args: Vec<String> = serde_json::from_value(config["args"].clone()).unwrap();
    check_serve_args("Nomad job", &args, ports["rpc"], ports["metrics"]);

    // Templates become files in the task's directories; the TLS ones come from a Nomad
    // Variable, played here by certificates made by the test.
    let root = tempfile::tempdir().unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let mut rendered = BTreeSet::new();
    for template in blocks(&task["template"]) {
        let dest = template["destination"].as_str().unwrap();
        let data = template["data"].as_str().unwrap();
        let host = root.path().join(dest);
        if data.contains("nomadVar") {
            assert!(
                dest.starts_with("secrets/"),
                "{dest}: secrets stay in secrets/"
            );
            let name = Path::new(dest).file_name().unwrap().to_str().unwrap();
            let key = name.replace('.', "_");
            assert!(data.contains(&format!(".{key}")), "{dest} reads {key}");
            assert!(
                text.contains(&format!("{key}=@")),
                "the header's `nomad var put` sets {key}"
            );
            install(&pki.file(name), &host, 0o400);
        } else {
            write(&host, data);
        }
        rendered.insert(format!("/{dest}"));
    }
    let cache = flag_value(&args, "--cache-dir").unwrap();
    assert!(
        cache.starts_with("/alloc/data/"),
        "{cache}: kept across task restarts"
    );
    std::fs::create_dir_all(root.path().join("alloc/data")).unwrap();
    for p in paths_in(&args).into_iter().filter(|p| p != cache) {
        assert!(rendered.contains(&p), "{p} is not a template's destination");
    }
    boot_and_use("Nomad job", &args, root.path(), &pki);
}

// ---------------------------------------------------------------------------------------------
// The container image

/// What the Dockerfile's final stage runs as and exposes, and where it puts the binary.
struct Image {
    uid: u32,
    exposed: BTreeSet<u16>,
}

fn image() -> Image {
    let text = read("deploy/container/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    let final_stage = &lines[last_from..];
    let uid = final_stage
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| u.split(':').next()?.parse().ok())
        .expect("a numeric USER (runAsNonRoot needs one)");
    let exposed = final_stage
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    Image { uid, exposed }
}

#[test]
fn the_container_recipe_builds_the_binary_the_manifests_run() {
    let text = read("deploy/container/Dockerfile");
    // Every COPY from the build context exists, and the workspace's members are all there.
    let copied: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].to_vec()
        })
        .collect();
    for path in &copied {
        assert!(repo(path).exists(), "COPY {path}: not in the repository");
    }
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let top = member.split('/').next().unwrap();
        assert!(
            member == "." || copied.contains(&top),
            "workspace member {member} not copied"
        );
    }
    assert!(text.contains("cargo build --release --locked --bin cell"));
    // The binary the build makes is the one the entrypoint runs.
    let dest = text
        .lines()
        .find(|l| l.starts_with("COPY --from=build /src/target/release/cell "))
        .and_then(|l| l.split_whitespace().last())
        .expect("the binary copied from the build stage");
    assert!(text.contains(&format!("ENTRYPOINT [\"{dest}\"]")), "{dest}");
    // Build outputs stay out of the context.
    let ignored = read(".dockerignore");
    for dir in ["target", "guests/target"] {
        assert!(
            ignored.lines().any(|l| l.trim() == dir),
            ".dockerignore: {dir}"
        );
    }
    // The ports the manifests use are the ones the image exposes.
    let img = image();
    let hcl_text = read("deploy/nomad/cell.nomad.hcl");
    for port in &img.exposed {
        assert!(
            hcl_text.contains(&format!("static = {port}")),
            "Nomad: {port}"
        );
        assert!(
            read("deploy/kubernetes/daemonset.yaml").contains(&format!("containerPort: {port}"))
        );
    }
    assert_eq!(img.exposed.len(), 2, "RPC and metrics");
}
