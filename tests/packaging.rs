//! Installing mcpwatch like a product: the Debian package through its whole life
//! (install, run, remove, purge, nothing left), lintian, and the Kubernetes manifests
//! rendered with kustomize and validated strictly.

use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::{fs::PermissionsExt as _, io::AsRawFd as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use mcpwatch_e2e::{require_root, run, text, Agent};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("MCPWATCH_REPO").expect("MCPWATCH_REPO is not set: run `cargo xtask test`"),
    )
}

fn env_path(var: &str) -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os(var)
            .unwrap_or_else(|| panic!("{var} is not set: run the tests with `cargo xtask test`")),
    );
    assert!(
        p.exists(),
        "{var}={} does not exist: run `cargo xtask test`",
        p.display()
    );
    p
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- Debian package

/// Serialises package tests of concurrent test runs on this machine (an flock held
/// for the whole install/purge cycle).
struct MachineLock(#[allow(dead_code)] File);

impl MachineLock {
    fn take() -> Self {
        let f = File::create("/run/lock/mcpwatch-package-test.lock")
            .or_else(|_| File::create("/tmp/mcpwatch-package-test.lock"))
            .unwrap();
        // SAFETY: flock on a descriptor we own; released when the file closes.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        Self(f)
    }
}

/// dpkg fails at once when another dpkg/apt holds its lock: retry for a while.
fn dpkg(args: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        let out = run(Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("lock") || start.elapsed() > Duration::from_secs(120) {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "mcpwatch"]))
        .stdout
        .starts_with(b"install ok installed")
}

/// Every path with "mcpwatch" in its name where a package could leave something.
fn mcpwatch_paths() -> BTreeSet<PathBuf> {
    let roots = [
        "/etc",
        "/usr/bin",
        "/usr/lib/systemd",
        "/lib/systemd",
        "/usr/share/doc",
        "/usr/share/lintian",
        "/var/lib/mcpwatch",
        "/var/log/mcpwatch",
        "/var/lib/systemd",
        "/var/lib/dpkg/info",
    ];
    let mut out = BTreeSet::new();
    for root in roots {
        if !Path::new(root).exists() {
            continue;
        }
        let found = ok(Command::new("find").args([root, "-path", "*mcpwatch*"]));
        out.extend(found.lines().map(PathBuf::from));
    }
    out
}

/// Purges the package if the test is interrupted half-way.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if installed() {
            let _ = dpkg(&["--purge", "mcpwatch"]);
        }
    }
}

#[test]
fn debian_package_installs_runs_and_purges_without_leftovers() {
    require_root();
    let deb = env_path("MCPWATCH_DEB");
    let _lock = MachineLock::take();
    assert!(
        !installed(),
        "an mcpwatch package is already installed on this machine: the test will not touch it \
         (dpkg --purge mcpwatch, then rerun)"
    );
    let before = mcpwatch_paths();
    let _guard = PurgeOnDrop;

    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    assert!(installed());

    // What the package put where.
    let version = ok(Command::new("/usr/bin/mcpwatch").arg("version"));
    assert_eq!(version.trim(), format!("mcpwatch {}", env!("CARGO_PKG_VERSION")));
    assert!(
        Path::new("/etc/mcpwatch/rules.yaml").is_file(),
        "no /etc/mcpwatch/rules.yaml"
    );
    // The installed rule file is valid for the installed binary.
    let summary = ok(Command::new("/usr/bin/mcpwatch").args(["check-rules", "/etc/mcpwatch/rules.yaml"]));
    assert!(!summary.trim().is_empty(), "check-rules printed no summary");
    for (path, mode) in [
        ("/etc/mcpwatch/config.yaml", 0o640),
        ("/etc/mcpwatch/rules.yaml", 0o640),
        ("/var/lib/mcpwatch", 0o700),
    ] {
        let m = std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode();
        assert_eq!(m & 0o777, mode, "{path} mode {:o}", m & 0o777);
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "mcpwatch"]));
    for f in [
        "/etc/mcpwatch/config.yaml",
        "/etc/mcpwatch/rules.yaml",
        "/etc/default/mcpwatch",
    ] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    let unit = [
        "/usr/lib/systemd/system/mcpwatch.service",
        "/lib/systemd/system/mcpwatch.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the package installed no systemd unit");
    assert_eq!(
        std::fs::read_to_string(unit).unwrap(),
        std::fs::read_to_string(repo().join("packaging/systemd/mcpwatch.service")).unwrap()
    );
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/mcpwatch.service").exists(),
        "the unit was not enabled"
    );
    // The installed configuration is what the agent reads when given nothing.
    let printed = ok(Command::new("/usr/bin/mcpwatch")
        .args(["print-config", "--format", "json"])
        .env_remove("MCPWATCH_CONFIG"));
    let v: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["config_file"], "/etc/mcpwatch/config.yaml");
    assert_eq!(v["settings"]["rules"]["value"], "/etc/mcpwatch/rules.yaml");
    assert_eq!(
        v["settings"]["outputs"]["value"],
        serde_json::json!(["jsonl:/var/log/mcpwatch/events.jsonl"])
    );
    let verify = run(Command::new("systemd-analyze").args(["verify", "--man=no", unit]));
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "installed unit: {}",
        text(&verify)
    );

    // Remove keeps the configuration; purge takes everything.
    let out = dpkg(&["--remove", "mcpwatch"]);
    assert!(out.status.success(), "dpkg --remove: {}", text(&out));
    assert!(!Path::new("/usr/bin/mcpwatch").exists());
    assert!(
        Path::new("/etc/mcpwatch/config.yaml").exists(),
        "remove dropped a conffile"
    );
    let out = dpkg(&["--purge", "mcpwatch"]);
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
    let after = mcpwatch_paths();
    let left: Vec<_> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind after purge: {left:?}");
}

#[test]
fn lintian_reports_no_errors() {
    let deb = env_path("MCPWATCH_DEB");
    let out = run(Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb));
    let report = text(&out);
    let errors: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("E:"))
        .map(str::to_string)
        .collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // lintian exits non-zero on errors only (warnings are listed above for the record).
    assert!(out.status.success(), "{report}");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

// ---------------------------------------------------------------- Kubernetes

fn kustomize(dir: &Path) -> String {
    let out = run(Command::new("kubectl").arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {} (kubectl with kustomize v5 is needed; it ships with this machine image): {}",
        dir.display(),
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kubernetes_validate(rendered: &str) -> Output {
    let bin = env_path("MCPWATCH_KUBERNETES_VALIDATE");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    run(Command::new(bin).arg("--strict").arg(&file))
}

fn docs(rendered: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn overlays() -> Vec<PathBuf> {
    let k = repo().join("packaging/kubernetes");
    let mut dirs = vec![k.join("base")];
    let mut o: Vec<_> = std::fs::read_dir(k.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    o.sort();
    dirs.extend(o);
    dirs
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let dirs = overlays();
    assert!(dirs.len() >= 3, "base + overlays: {dirs:?}");
    for dir in &dirs {
        let rendered = kustomize(dir);
        let out = kubernetes_validate(&rendered);
        assert!(out.status.success(), "{}: {}", dir.display(), text(&out));
        let all = text(&out);
        assert!(!all.contains("ERROR"), "{}: {all}", dir.display());
    }
    // The gate can fail: a misspelt field is rejected.
    let broken = kustomize(&dirs[0]).replace("hostPID: true", "hostPid: true");
    let out = kubernetes_validate(&broken);
    assert!(
        !out.status.success(),
        "--strict let hostPid through: {}",
        text(&out)
    );
}

#[test]
fn daemonset_is_least_privilege_and_complete() {
    let base = docs(&kustomize(&repo().join("packaging/kubernetes/base")));
    let kinds: BTreeSet<_> = base
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Service",
    ] {
        assert!(kinds.contains(k), "base lacks a {k}: {kinds:?}");
    }
    let ds = find(&base, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["tolerations"], serde_json::json!([{"operator": "Exists"}]));
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // The systemd unit's capabilities (each shown to be needed by tests/service.rs),
    // plus SYS_RESOURCE: no LimitMEMLOCK here, and kernels before 5.11 need it.
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/mcpwatch.service")).unwrap();
    let mut want: BTreeSet<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .flat_map(|v| {
            v.split_whitespace()
                .map(|c| c.trim_start_matches("CAP_").to_string())
        })
        .collect();
    want.insert("SYS_RESOURCE".into());
    let got: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for r in ["requests", "limits"] {
        assert!(c["resources"][r]["cpu"].is_string() && c["resources"][r]["memory"].is_string());
    }
    let env = c["env"].as_array().unwrap();
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no env {n}"))
    };
    assert_eq!(
        var("POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        var("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(var("MCPWATCH_LISTEN")["value"], "$(POD_IP):9477");
    let mounts: BTreeSet<_> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    for m in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/fs/bpf",
        "/var/lib/mcpwatch",
        "/etc/mcpwatch",
        "/sys/fs/cgroup",
    ] {
        assert!(mounts.contains(m), "no mount at {m}: {mounts:?}");
    }
    // The ConfigMap carries the repository's rules and a config the agent accepts.
    let cm = find(&base, "ConfigMap");
    let rules = std::fs::read_to_string(repo().join("rules.yaml")).unwrap();
    assert_eq!(
        cm["data"]["rules.yaml"],
        rules.as_str(),
        "packaging/kubernetes/base/rules.yaml drifted from rules.yaml (kustomize reads only files \
         below the base): cp rules.yaml packaging/kubernetes/base/rules.yaml"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let out = run(Command::new(mcpwatch_e2e::agent_binary())
        .args(["print-config", "--format", "json"])
        .env("MCPWATCH_CONFIG", &cfg));
    assert!(
        out.status.success(),
        "the ConfigMap's config.yaml is rejected: {}",
        text(&out)
    );
    // The metrics Service selects the agent pods.
    let svc = find(&base, "Service");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &ds["spec"]["template"]["metadata"]["labels"][k], v,
            "selector {k}"
        );
    }

    let privileged = docs(&kustomize(
        &repo().join("packaging/kubernetes/overlays/privileged"),
    ));
    let sc = &find(&privileged, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], true);
    // The API server refuses privileged with allowPrivilegeEscalation=false.
    assert_ne!(sc["allowPrivilegeEscalation"], false);
}

/// Ten drops a minute on n1 for 20 minutes, and n2 down for 20 minutes.
const PROMTOOL_TEST: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mcpwatch_kernel_drops_total{node="n1",kind="exec"}'
        values: '0+10x30'
      - series: 'up{job="mcpwatch-metrics",node="n2"}'
        values: '0x30'
      - series: 'up{job="mcpwatch-metrics",node="n1"}'
        values: '1x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: MCPWatchKernelDrops
        exp_alerts:
          - exp_labels: {severity: warning, node: n1, kind: exec}
            exp_annotations:
              summary: mcpwatch on n1 loses exec events in the kernel (ring buffer full); raise ringbuf_size.
      - eval_time: 20m
        alertname: MCPWatchAgentDown
        exp_alerts:
          - exp_labels: {severity: critical, node: n2, job: mcpwatch-metrics}
            exp_annotations:
              summary: mcpwatch on n2 is not answering; that node is unwatched.
      - eval_time: 3m
        alertname: MCPWatchAgentDown
        exp_alerts: []
"#;

#[test]
fn prometheus_rules_name_metrics_the_agent_exports() {
    let rendered = kustomize(&repo().join("packaging/kubernetes/overlays/prometheus-operator"));
    let all = docs(&rendered);
    let sm = find(&all, "ServiceMonitor");
    let svc = find(&all, "Service");
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "ServiceMonitor selector {k}");
    }
    let rule = find(&all, "PrometheusRule");
    let exprs: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(!exprs.is_empty());

    // promtool (Debian's prometheus) checks the rules and fires two of them on
    // synthetic series.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rule["spec"].to_string()).unwrap();
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yaml")));
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
    std::fs::write(dir.path().join("test.yaml"), PROMTOOL_TEST).unwrap();
    let out = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.path().join("test.yaml")));
    assert!(out.status.success(), "promtool test rules: {}", text(&out));

    let agent = Agent::start();
    let (code, metrics) = agent.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("mcpwatch_"))
        {
            assert!(
                exported.contains(name),
                "{name} (in `{expr}`) is not exported; the agent has {exported:?}"
            );
        }
    }
}

#[test]
fn dockerfile_copies_only_files_that_exist() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "the Dockerfile must be multi-stage");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let parts: Vec<_> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo().join(src).exists(), "{line}: {src} does not exist");
        }
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim_end_matches('/') == "target"),
        ".dockerignore must skip target/"
    );
}
