//! The deployment files under `deploy/`, checked for what operators rely on:
//!
//! - Kubernetes (`deploy/kubernetes`): every manifest parses and is listed in
//!   the kustomization; the broker runs unprivileged on a read-only root;
//!   probes hit `/readyz` and `/healthz`; the routes ConfigMap is mounted as
//!   a directory (a `subPath` mount never sees an update) and passes
//!   `pgsni check`; replicas, a PodDisruptionBudget and a drain that fits
//!   the grace period; a NetworkPolicy that opens only Postgres, metrics and
//!   DNS; a Service on 5432.
//! - systemd (`deploy/systemd/pgsni.service`): the sandboxing directives,
//!   reload by SIGHUP, a stop timeout longer than the drain, and
//!   `systemd-analyze verify` where it is installed.
//! - The Dockerfile: a static build in an empty image, run as 65532.
//! - The command lines of all three start a broker that becomes ready and
//!   stops cleanly on SIGTERM.
//! - The Grafana dashboard (`deploy/grafana`): every query names metrics and
//!   labels from README's metrics table, which must match the code's names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PGSNI: &str = env!("CARGO_BIN_EXE_pgsni");

/// Where every deployment expects the routes file.
const ROUTES_PATH: &str = "/etc/pgsni/routes.toml";

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

fn kube_dir() -> PathBuf {
    Path::new(ROOT).join("deploy/kubernetes")
}

/// The YAML files of `deploy/kubernetes`, by file name.
fn kube_files() -> BTreeSet<String> {
    std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes exists")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect()
}

/// Every document of every manifest, kustomization included.
fn kube_docs() -> Vec<Doc> {
    let mut docs = Vec::new();
    for file in kube_files() {
        let text = std::fs::read_to_string(kube_dir().join(&file)).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{file}: invalid YAML: {error}"));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

fn the_one<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs.iter().filter(|doc| doc.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn all<'a>(docs: &'a [Doc], kind: &'a str) -> impl Iterator<Item = &'a Doc> {
    docs.iter().filter(move |doc| doc.kind() == kind)
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    let Some(mapping) = value.as_mapping() else {
        return BTreeMap::new();
    };
    mapping
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().expect("string keys").to_owned(), v)
        })
        .collect()
}

/// Whether every `matchLabels` pair is among `labels`.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    let wanted = string_map(match_labels);
    let have = string_map(labels);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn pod_spec(deployment: &Doc) -> &Value {
    &deployment.value["spec"]["template"]["spec"]
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
}

fn the_container(deployment: &Doc) -> &Value {
    let containers = seq(&pod_spec(deployment)["containers"]);
    assert_eq!(containers.len(), 1, "one container, the broker");
    &containers[0]
}

/// The container's arguments, as strings.
fn args(container: &Value) -> Vec<String> {
    seq(&container["args"])
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_owned())
        .collect()
}

/// The value after `flag` in a command line.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let at = args.iter().position(|arg| arg == flag)?;
    args.get(at + 1).map(String::as_str)
}

/// A duration as the broker's command line takes it (`25s`, `500ms`, `1m`).
fn seconds(text: &str) -> f64 {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|at| text.split_at(at))
        .unwrap_or((text, "s"));
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("{text:?}"));
    match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        _ => panic!("unknown unit in {text:?}"),
    }
}

/// The port number a probe or Service refers to: a number, or the name of a
/// container port.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("port is a number or a name");
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The port of `--metrics-listen` in the container's arguments.
fn metrics_port(container: &Value) -> u64 {
    let addr = flag_value(&args(container), "--metrics-listen")
        .expect("--metrics-listen is set: the probes need it")
        .to_owned();
    let addr: SocketAddr = addr.parse().expect("--metrics-listen is an address");
    u64::from(addr.port())
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let docs = kube_docs();
    let kustomization = the_one(&docs, "Kustomization");
    assert_eq!(kustomization.file, "kustomization.yaml");
    let listed: BTreeSet<String> = seq(&kustomization.value["resources"])
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let mut files = kube_files();
    files.remove("kustomization.yaml");
    assert_eq!(listed, files, "kustomization resources vs files on disk");

    for doc in docs.iter().filter(|d| d.kind() != "Kustomization") {
        let what = format!("{} {} in {}", doc.kind(), doc.name(), doc.file);
        assert!(doc.value["apiVersion"].is_string(), "{what}: apiVersion");
        assert!(!doc.name().is_empty(), "{what}: metadata.name");
        let namespace = match doc.kind() {
            "Namespace" => doc.name(),
            _ => doc.value["metadata"]["namespace"].as_str().unwrap_or(""),
        };
        assert_eq!(namespace, "pgsni", "{what}: namespace");
    }
    for kind in [
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(all(&docs, kind).next().is_some(), "no {kind}");
    }
}

#[test]
fn the_broker_runs_unprivileged_on_a_read_only_root() {
    let docs = kube_docs();
    let mut checked = 0;
    for deployment in all(&docs, "Deployment") {
        let pod = pod_spec(deployment);
        let pod_security = &pod["securityContext"];
        assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(pod[host].as_bool(), Some(true), "{host}");
        }
        for container in containers(pod) {
            let name = container["name"].as_str().unwrap_or("?");
            let security = &container["securityContext"];
            // Container settings override the pod's.
            let effective = |key: &str| {
                if security[key].is_null() {
                    &pod_security[key]
                } else {
                    &security[key]
                }
            };
            assert_eq!(
                security["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{name}: allowPrivilegeEscalation"
            );
            assert_eq!(
                security["privileged"].as_bool(),
                Some(false),
                "{name}: privileged"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{name}: readOnlyRootFilesystem"
            );
            let dropped: Vec<&str> = seq(&security["capabilities"]["drop"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(dropped.contains(&"ALL"), "{name}: capabilities.drop");
            assert!(
                seq(&security["capabilities"]["add"]).is_empty(),
                "{name}: capabilities.add"
            );
            assert_eq!(
                effective("runAsNonRoot").as_bool(),
                Some(true),
                "{name}: runAsNonRoot"
            );
            let uid = effective("runAsUser").as_u64();
            assert!(uid.is_some_and(|uid| uid != 0), "{name}: runAsUser {uid:?}");
            assert_eq!(
                effective("seccompProfile")["type"].as_str(),
                Some("RuntimeDefault"),
                "{name}: seccompProfile"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no container checked");
}

#[test]
fn probes_ask_the_health_endpoints_on_the_metrics_port() {
    let docs = kube_docs();
    let deployment = the_one(&docs, "Deployment");
    let container = the_container(deployment);
    let metrics = metrics_port(container);
    assert_ne!(metrics, 5432);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            resolve_port(container, &get["port"]),
            metrics,
            "{probe} port is the --metrics-listen port"
        );
    }
    let ports: BTreeSet<u64> = seq(&container["ports"])
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(ports, BTreeSet::from([5432, metrics]), "container ports");
    let args = args(container);
    let listen = flag_value(&args, "--listen").expect("--listen");
    assert!(listen.ends_with(":5432"), "--listen {listen}");
}

#[test]
fn the_routes_configmap_is_mounted_as_a_directory() {
    let docs = kube_docs();
    let deployment = the_one(&docs, "Deployment");
    let pod = pod_spec(deployment);
    for container in containers(pod) {
        for mount in seq(&container["volumeMounts"]) {
            assert!(
                mount["subPath"].is_null() && mount["subPathExpr"].is_null(),
                "a subPath mount never sees ConfigMap updates: {mount:?}"
            );
        }
    }

    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| !v["configMap"].is_null())
        .expect("a ConfigMap volume");
    let configmap_name = volume["configMap"]["name"].as_str().unwrap();
    assert!(
        seq(&volume["configMap"]["items"]).is_empty(),
        "the whole ConfigMap is mounted, not chosen items"
    );
    let configmap = all(&docs, "ConfigMap")
        .find(|c| c.name() == configmap_name)
        .unwrap_or_else(|| panic!("ConfigMap {configmap_name} is in the manifests"));

    let container = the_container(deployment);
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the broker mounts the routes volume");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let mount_path = mount["mountPath"].as_str().unwrap();
    let args = args(container);
    let routes = flag_value(&args, "--routes").expect("--routes");
    assert_eq!(routes, ROUTES_PATH);
    let key = Path::new(routes)
        .strip_prefix(mount_path)
        .unwrap_or_else(|_| panic!("--routes {routes} is under the mount {mount_path}"));
    let key = key.to_str().unwrap();
    assert!(!key.contains('/'), "the file is directly in the mount");
    assert!(
        configmap.value["data"][key].is_string(),
        "ConfigMap {configmap_name} has the key {key}"
    );
}

#[test]
fn the_example_routes_in_the_configmap_pass_pgsni_check() {
    let docs = kube_docs();
    let routes = all(&docs, "ConfigMap")
        .find_map(|c| c.value["data"]["routes.toml"].as_str())
        .expect("a ConfigMap with routes.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, routes).unwrap();
    let out = Command::new(PGSNI)
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok, 3 routes"), "{stdout}");
}

#[test]
fn the_broker_scales_out_and_drains_within_its_budget() {
    let docs = kube_docs();
    let deployment = the_one(&docs, "Deployment");
    let spec = &deployment.value["spec"];
    let replicas = spec["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "replicas {replicas}");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));

    // Spread over nodes: a spread constraint or an anti-affinity by host.
    let pod = pod_spec(deployment);
    let spread = seq(&pod["topologySpreadConstraints"]).iter().any(|c| {
        c["topologyKey"] == "kubernetes.io/hostname"
            && selects(&c["labelSelector"]["matchLabels"], pod_labels)
    });
    let anti = !pod["affinity"]["podAntiAffinity"].is_null();
    assert!(spread || anti, "replicas are spread across nodes");

    // A budget over the same pods that still lets a node drain.
    let pdb = the_one(&docs, "PodDisruptionBudget");
    assert_eq!(
        string_map(&pdb.value["spec"]["selector"]["matchLabels"]),
        string_map(&spec["selector"]["matchLabels"]),
        "the budget selects the Deployment's pods"
    );
    let budget = &pdb.value["spec"];
    match (
        budget["maxUnavailable"].as_u64(),
        budget["minAvailable"].as_u64(),
    ) {
        (Some(max), None) => assert!(max >= 1 && max < replicas, "maxUnavailable {max}"),
        (None, Some(min)) => assert!(min >= 1 && min < replicas, "minAvailable {min}"),
        other => panic!("a numeric maxUnavailable or minAvailable: {other:?}"),
    }

    // preStop sleep + drain + the broker's final 5 s close wait must end
    // before the kubelet's SIGKILL.
    let container = the_container(deployment);
    let drain = seconds(flag_value(&args(container), "--drain-timeout").unwrap_or("30s"));
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_f64()
        .unwrap_or(0.0);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    assert!(
        pre_stop + drain + 5.0 < grace,
        "preStop {pre_stop}s + drain {drain}s + 5s must fit in the grace period {grace}s"
    );
    assert!(
        !container["resources"]["requests"]["cpu"].is_null()
            && !container["resources"]["requests"]["memory"].is_null()
            && !container["resources"]["limits"]["memory"].is_null(),
        "resource requests and a memory limit"
    );
}

/// `(protocol, port)` pairs of a NetworkPolicy rule; TCP when unset.
fn rule_ports(rule: &Value) -> Vec<(String, u64)> {
    seq(&rule["ports"])
        .iter()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_owned();
            let port = p["port"].as_u64().expect("numeric NetworkPolicy ports");
            assert!(p["endPort"].is_null(), "no port ranges");
            (protocol, port)
        })
        .collect()
}

#[test]
fn network_policy_denies_by_default_and_opens_only_postgres_metrics_and_dns() {
    let docs = kube_docs();
    let deployment = the_one(&docs, "Deployment");
    let pod_labels = &deployment.value["spec"]["template"]["metadata"]["labels"];
    let metrics = metrics_port(the_container(deployment));
    let tcp = |port| ("TCP".to_owned(), port);

    let policies: Vec<&Doc> = all(&docs, "NetworkPolicy").collect();
    let both = |doc: &Doc| {
        let types: BTreeSet<&str> = seq(&doc.value["spec"]["policyTypes"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        types == BTreeSet::from(["Ingress", "Egress"])
    };
    // A namespace-wide policy without rules: everything not allowed below is
    // refused, both ways.
    assert!(
        policies.iter().any(|p| {
            let spec = &p.value["spec"];
            string_map(&spec["podSelector"]).is_empty()
                && both(p)
                && seq(&spec["ingress"]).is_empty()
                && seq(&spec["egress"]).is_empty()
        }),
        "a default-deny NetworkPolicy"
    );
    let broker: Vec<&&Doc> = policies
        .iter()
        .filter(|p| selects(&p.value["spec"]["podSelector"]["matchLabels"], pod_labels))
        .collect();
    assert_eq!(broker.len(), 1, "one NetworkPolicy for the broker");
    assert!(
        both(broker[0]),
        "the broker's policy covers Ingress and Egress"
    );

    // Every rule of every policy in the namespace names its ports, and only
    // these.
    let mut ingress = BTreeSet::new();
    let mut egress = BTreeSet::new();
    for policy in &policies {
        for rule in seq(&policy.value["spec"]["ingress"]) {
            let ports = rule_ports(rule);
            assert!(!ports.is_empty(), "ingress rule without ports: {rule:?}");
            for port in ports {
                assert!(
                    port == tcp(5432) || port == tcp(metrics),
                    "ingress {port:?}"
                );
                // Metrics only from a chosen place; Postgres from anywhere.
                if port == tcp(metrics) {
                    assert!(!seq(&rule["from"]).is_empty(), "metrics open to all");
                }
                ingress.insert(port);
            }
        }
        for rule in seq(&policy.value["spec"]["egress"]) {
            let ports = rule_ports(rule);
            assert!(!ports.is_empty(), "egress rule without ports: {rule:?}");
            assert!(!seq(&rule["to"]).is_empty(), "egress open to all: {rule:?}");
            for (protocol, port) in ports {
                assert!(
                    (protocol == "TCP" && port == 5432)
                        || (port == 53 && (protocol == "UDP" || protocol == "TCP")),
                    "egress {protocol}/{port}"
                );
                egress.insert((protocol, port));
            }
        }
    }
    assert_eq!(ingress, BTreeSet::from([tcp(5432), tcp(metrics)]));
    assert!(egress.contains(&tcp(5432)), "egress to tenants");
    assert!(
        egress.contains(&("UDP".to_owned(), 53)),
        "DNS: backends may be names"
    );
    // Tenants are reached by namespace label, not by opening the world.
    let tenant_rule = seq(&broker[0].value["spec"]["egress"])
        .iter()
        .find(|r| rule_ports(r).contains(&tcp(5432)))
        .unwrap();
    assert!(seq(&tenant_rule["to"])
        .iter()
        .all(|peer| peer["ipBlock"].is_null() && !peer["namespaceSelector"].is_null()));
}

#[test]
fn the_services_expose_postgres_publicly_and_metrics_inside() {
    let docs = kube_docs();
    let deployment = the_one(&docs, "Deployment");
    let container = the_container(deployment);
    let pod_labels = &deployment.value["spec"]["template"]["metadata"]["labels"];
    let services: Vec<&Doc> = all(&docs, "Service").collect();
    for service in &services {
        assert!(
            selects(&service.value["spec"]["selector"], pod_labels),
            "Service {} selects the broker",
            service.name()
        );
    }
    let public: Vec<&&Doc> = services
        .iter()
        .filter(|s| s.value["spec"]["type"] == "LoadBalancer")
        .collect();
    assert_eq!(public.len(), 1, "one LoadBalancer Service");
    let spec = &public[0].value["spec"];
    assert_eq!(spec["externalTrafficPolicy"].as_str(), Some("Local"));
    let ports = seq(&spec["ports"]);
    assert_eq!(ports.len(), 1, "only Postgres is public");
    assert_eq!(ports[0]["port"].as_u64(), Some(5432));
    assert_eq!(resolve_port(container, &ports[0]["targetPort"]), 5432);

    let metrics = metrics_port(container);
    assert!(
        services.iter().any(|s| {
            s.value["spec"]["type"] != "LoadBalancer"
                && seq(&s.value["spec"]["ports"])
                    .iter()
                    .any(|p| resolve_port(container, &p["targetPort"]) == metrics)
        }),
        "an in-cluster Service for the metrics port"
    );
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

fn unit_path() -> PathBuf {
    Path::new(ROOT).join("deploy/systemd/pgsni.service")
}

/// `(section, key)` to every value assigned, in order (an empty value
/// resets a list in systemd, and is kept).
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        assert!(!line.ends_with('\\'), "no continuation lines: {line}");
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        entries
            .entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    entries
}

/// A `systemd` time span such as `45s`, `1min 30s` or a bare number of
/// seconds.
fn systemd_seconds(text: &str) -> f64 {
    text.split_whitespace().map(seconds).sum()
}

#[test]
fn the_systemd_unit_is_sandboxed_and_reloads_on_sighup() {
    let unit = parse_unit(&std::fs::read_to_string(unit_path()).unwrap());
    let last = |key: &str| -> String {
        unit.get(&("Service".to_owned(), key.to_owned()))
            .and_then(|values| values.last().cloned())
            .unwrap_or_else(|| panic!("[Service] {key}= is set"))
    };
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("ConfigurationDirectory", "pgsni"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "1048576"),
    ] {
        assert_eq!(last(key), want, "[Service] {key}=");
    }
    let families: BTreeSet<String> = last("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let allowed: BTreeSet<String> = ["AF_INET", "AF_INET6", "AF_UNIX"].map(str::to_owned).into();
    assert_eq!(families, allowed, "RestrictAddressFamilies=");
    let filters = &unit[&("Service".to_owned(), "SystemCallFilter".to_owned())];
    assert_eq!(
        filters[0], "@system-service",
        "SystemCallFilter= allow list"
    );
    assert!(
        filters.iter().skip(1).all(|f| f.starts_with('~')),
        "later SystemCallFilter= lines only take away"
    );

    let exec: Vec<String> = last("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[..2], ["/usr/local/bin/pgsni", "serve"]);
    assert_eq!(flag_value(&exec, "--routes"), Some(ROUTES_PATH));
    let metrics: SocketAddr = flag_value(&exec, "--metrics-listen")
        .expect("--metrics-listen")
        .parse()
        .unwrap();
    assert!(metrics.ip().is_loopback(), "metrics stay on loopback");
    let drain = seconds(flag_value(&exec, "--drain-timeout").unwrap_or("30s"));
    let stop = systemd_seconds(&last("TimeoutStopSec"));
    assert!(
        drain + 5.0 < stop,
        "TimeoutStopSec={stop}s must outlast the drain ({drain}s) and the final close"
    );
}

/// `systemd-analyze verify` reads the unit as systemd would: unknown keys,
/// bad values and a missing binary are reported. Skipped where systemd is
/// not installed.
#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; skipping");
        return;
    }
    // The binary is checked for existence: point at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit_path())
        .unwrap()
        .replace("/usr/local/bin/pgsni", PGSNI);
    let path = dir.path().join("pgsni.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings:\n{stderr}");
}

// ---------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------

fn dockerfile() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("deploy/docker/Dockerfile")).unwrap()
}

/// The Dockerfile's instructions, `(INSTRUCTION, arguments)`, with
/// continuation lines joined and comments dropped.
fn docker_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((op.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The exec-form (JSON array) arguments of an instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form {args}: {e}"))
}

#[test]
fn the_dockerfile_builds_a_static_binary_into_an_empty_image() {
    let instructions = docker_instructions(&dockerfile());
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, args)| args.as_str())
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(
        stages[0].contains("alpine") || stages[0].contains("musl"),
        "the build stage targets musl: {}",
        stages[0]
    );
    let last = stages.last().unwrap();
    assert!(
        *last == "scratch" || last.contains("distroless/static"),
        "the final image is empty: {last}"
    );
    let final_stage: Vec<&(String, String)> = instructions
        .iter()
        .skip_while(|(op, args)| !(op == "FROM" && args == last))
        .collect();
    let get = |op: &str| {
        final_stage
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, args)| args.as_str())
            .unwrap_or_else(|| panic!("{op} in the final stage"))
    };
    assert_eq!(get("USER"), "65532:65532");
    let exposed: BTreeSet<&str> = get("EXPOSE").split_whitespace().collect();
    assert_eq!(exposed, BTreeSet::from(["5432", "9187"]));
    assert_eq!(exec_form(get("ENTRYPOINT")), ["/pgsni"]);
    let cmd = exec_form(get("CMD"));
    assert_eq!(cmd[0], "serve");
    assert_eq!(flag_value(&cmd, "--routes"), Some(ROUTES_PATH));

    // The build reads what the copy brings in: Cargo.toml names the benches.
    let build = instructions
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .expect("a cargo build step");
    assert!(build.1.contains("--locked") && build.1.contains("--release"));
    let copied: String = instructions
        .iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, args)| args.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in ["Cargo.toml", "Cargo.lock", "src", "benches"] {
        assert!(copied.contains(needed), "COPY {needed}");
    }
    // ... and the build context lets them through.
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src/", "!benches/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore {needed}"
        );
    }
}

// ---------------------------------------------------------------------------
// The three command lines, run
// ---------------------------------------------------------------------------

/// The long options `pgsni serve` accepts, from its help.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(PGSNI)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|word| word.starts_with("--"))
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The port in the `addr` field of the log line with `message`, in text
/// (`addr=127.0.0.1:1234`) or JSON form.
fn logged_port(log: &str, message: &str) -> Option<u16> {
    let line = log.lines().find(|line| line.contains(message))?;
    let addr = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json["fields"]["addr"].as_str()?.to_owned(),
        Err(_) => line
            .split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    };
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// Runs `pgsni` with a deployment's arguments, the addresses moved to free
/// loopback ports and the routes file to a copy of the ConfigMap's, waits
/// until `/readyz` answers 200, then stops it with SIGTERM and expects a
/// clean exit. Returns its log.
fn run_deployment_args(what: &str, args: &[String]) -> String {
    let flags = serve_flags();
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        assert!(flags.contains(arg), "{what}: `pgsni serve` has no {arg}");
    }
    assert_eq!(args[0], "serve", "{what}");
    assert_eq!(flag_value(args, "--routes"), Some(ROUTES_PATH), "{what}");

    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    let docs = kube_docs();
    let example = all(&docs, "ConfigMap")
        .find_map(|c| c.value["data"]["routes.toml"].as_str())
        .unwrap();
    std::fs::write(&routes, example).unwrap();
    let mut local = args.to_vec();
    for at in 1..local.len() {
        match local[at - 1].as_str() {
            "--listen" | "--metrics-listen" => local[at] = "127.0.0.1:0".to_owned(),
            "--routes" => local[at] = routes.to_str().unwrap().to_owned(),
            _ => {}
        }
    }
    let log_path = dir.path().join("pgsni.log");
    let mut child = Command::new(PGSNI)
        .args(&local)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: pgsni exited with {status}:\n{}", log());
        }
        let log = log();
        let port = logged_port(&log, "metrics and health endpoint listening");
        if let (Some(port), Some(_)) = (port, logged_port(&log, "accepting Postgres clients")) {
            let ready = http_get(port, "/readyz");
            if ready.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                break port;
            }
        }
        assert!(Instant::now() < deadline, "{what}: not ready:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let health = http_get(metrics, "/healthz").unwrap_or_default();
    assert!(health.starts_with("HTTP/1.1 200"), "{what}: {health}");
    let exposition = http_get(metrics, "/metrics").unwrap_or_default();
    assert!(
        exposition.contains("pgsni_routes 3"),
        "{what}: {exposition}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{what}: no exit after SIGTERM:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{what}: {status}:\n{}", log());
    log()
}

#[test]
fn the_kubernetes_args_start_a_broker_that_logs_json() {
    let docs = kube_docs();
    let container = the_container(the_one(&docs, "Deployment"));
    let args = args(container);
    assert_eq!(flag_value(&args, "--log-format"), Some("json"));
    let log = run_deployment_args("deployment.yaml", &args);
    for line in log.lines() {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json["level"].is_string() && json["fields"]["message"].is_string());
    }
    assert!(log.contains("\"stopped\""), "{log}");
}

#[test]
fn the_dockerfile_cmd_starts_a_broker() {
    let instructions = docker_instructions(&dockerfile());
    let cmd = instructions
        .iter()
        .rev()
        .find(|(op, _)| op == "CMD")
        .map(|(_, args)| exec_form(args))
        .unwrap();
    run_deployment_args("Dockerfile CMD", &cmd);
}

#[test]
fn the_systemd_exec_start_starts_a_broker() {
    let unit = parse_unit(&std::fs::read_to_string(unit_path()).unwrap());
    let exec = unit[&("Service".to_owned(), "ExecStart".to_owned())]
        .last()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    run_deployment_args("systemd ExecStart", &exec);
}

// ---------------------------------------------------------------------------
// Grafana dashboard
// ---------------------------------------------------------------------------

/// A row of README's metrics table.
struct MetricDoc {
    labels: BTreeSet<String>,
    /// The row's text, where label values are named in backquotes.
    text: String,
    histogram: bool,
}

/// README's metrics table, by metric name.
fn readme_metrics() -> BTreeMap<String, MetricDoc> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("README has a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let mut metrics = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 3, "metrics table row: {row}");
        let backquoted = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let name = backquoted(cells[0]).remove(0);
        metrics.insert(
            name,
            MetricDoc {
                labels: backquoted(cells[1]).into_iter().collect(),
                text: row.to_owned(),
                histogram: cells[2].contains("histogram"),
            },
        );
    }
    metrics
}

/// The metric names the code records: the `pub const NAME: &str =
/// "pgsni_…";` (and `"process_…"`) lines of `src/metrics/mod.rs`.
fn code_metrics() -> BTreeSet<String> {
    let source = std::fs::read_to_string(Path::new(ROOT).join("src/metrics/mod.rs")).unwrap();
    source
        .lines()
        .filter(|line| {
            line.starts_with("pub const ")
                && (line.contains(": &str = \"pgsni_") || line.contains(": &str = \"process_"))
        })
        .map(|line| line.split('"').nth(1).unwrap().to_owned())
        .collect()
}

/// README documents every metric the code records, and nothing else.
#[test]
fn readme_metrics_table_matches_the_code() {
    let code = code_metrics();
    assert!(code.contains(pgsni::metrics::CONNECTIONS_TOTAL), "{code:?}");
    let documented: BTreeSet<String> = readme_metrics().into_keys().collect();
    assert_eq!(documented, code, "README's metrics table vs src/metrics");
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(ROOT).join("deploy/grafana/pgsni-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// What one PromQL expression refers to.
#[derive(Default, Debug)]
struct Refs {
    metrics: BTreeSet<String>,
    /// Labels grouped by (`by (...)`) or matched (`{label="value"}`).
    labels: BTreeSet<String>,
    /// `(label, value)` of equality and inequality matchers on literals.
    matched: BTreeSet<(String, String)>,
}

/// PromQL functions, aggregations and keywords the dashboard may use.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "clamp_min",
    "label_values",
    "by",
    "without",
    "on",
    "ignoring",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// A small PromQL scanner: enough to find the metric names, the labels and
/// the matched values of the dashboard's expressions.
fn promql_refs(expr: &str) -> Refs {
    // Grafana's variable query: label_values(metric{matchers}, label).
    if let Some(inner) = expr
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        let (series, label) = inner.rsplit_once(',').expect("label_values(series, label)");
        let mut refs = promql_refs(series);
        refs.labels.insert(label.trim().to_owned());
        return refs;
    }
    let mut refs = Refs::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match word.as_str() {
                "by" | "without" => grouping = true,
                word if PROMQL_WORDS.contains(&word) => {}
                _ => {
                    assert!(
                        !(start > 0 && chars[start - 1] == '$'),
                        "a variable outside a matcher or range in {expr}"
                    );
                    refs.metrics.insert(word);
                }
            }
            continue;
        }
        match c {
            '(' if grouping => {
                let end = i + chars[i..].iter().position(|&c| c == ')').unwrap();
                let inside: String = chars[i + 1..end].iter().collect();
                refs.labels.extend(
                    inside
                        .split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty()),
                );
                grouping = false;
                i = end + 1;
            }
            '{' => {
                let end = i + chars[i..].iter().position(|&c| c == '}').unwrap();
                let inside: String = chars[i + 1..end].iter().collect();
                for matcher in inside.split(',') {
                    let matcher = matcher.trim();
                    let at = matcher.find(['=', '!']).expect("label matcher");
                    let label = matcher[..at].trim().to_owned();
                    let op_end = matcher[at..]
                        .find('"')
                        .map(|o| at + o)
                        .expect("quoted matcher value");
                    let op = matcher[at..op_end].trim();
                    let value = matcher[op_end..].trim_matches('"').to_owned();
                    if op == "=" || op == "!=" {
                        refs.matched.insert((label.clone(), value));
                    }
                    refs.labels.insert(label);
                }
                i = end + 1;
            }
            // Ranges: `[$__rate_interval]`, `[1h]`.
            '[' => i += chars[i..].iter().position(|&c| c == ']').unwrap() + 1,
            '"' => i += 1 + chars[i + 1..].iter().position(|&c| c == '"').unwrap() + 1,
            _ => {
                if c.is_ascii_digit() {
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
        }
    }
    refs
}

#[test]
fn promql_scanner_finds_metrics_labels_and_values() {
    let refs = promql_refs(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(pgsni_handshake_seconds_bucket{instance=~"$instance", outcome!="routed"}[$__rate_interval])))"#,
    );
    assert_eq!(
        refs.metrics,
        BTreeSet::from(["pgsni_handshake_seconds_bucket".to_owned()])
    );
    assert_eq!(
        refs.labels,
        ["le", "route", "instance", "outcome"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(
        refs.matched,
        BTreeSet::from([("outcome".to_owned(), "routed".to_owned())])
    );
}

/// The README metric a dashboard series name belongs to (histograms are
/// queried through their `_bucket`, `_sum` and `_count` series).
fn documented<'a>(
    readme: &'a BTreeMap<String, MetricDoc>,
    series: &str,
) -> Option<(&'a str, &'a MetricDoc)> {
    if let Some((name, doc)) = readme.get_key_value(series) {
        return Some((name, doc));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let (name, doc) = readme.get_key_value(series.strip_suffix(suffix)?)?;
        doc.histogram.then_some((name.as_str(), doc))
    })
}

#[test]
fn the_dashboard_queries_only_documented_metrics_and_labels() {
    let readme = readme_metrics();
    assert!(
        readme.len() >= 8,
        "README metrics table parsed: {}",
        readme.len()
    );
    let dashboard = dashboard();

    // Every query: panel targets and template variables.
    let mut exprs = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("a PromQL target").to_owned());
        }
    }
    let panel_exprs = exprs.len();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            exprs.push(variable["definition"].as_str().unwrap().to_owned());
        }
    }
    assert!(panel_exprs >= 15, "{panel_exprs} panel queries");

    let mut queried = BTreeSet::new();
    for expr in &exprs {
        let refs = promql_refs(expr);
        assert!(!refs.metrics.is_empty(), "no metric in {expr}");
        let mut labels: BTreeSet<String> = ["instance", "job"].map(str::to_owned).into();
        for series in &refs.metrics {
            let (name, doc) = documented(&readme, series)
                .unwrap_or_else(|| panic!("{series} is not in README's metrics table: {expr}"));
            assert!(
                !(doc.histogram && series == name),
                "a histogram is queried through {series}_bucket, _sum or _count: {expr}"
            );
            queried.insert(name.to_owned());
            labels.extend(doc.labels.iter().cloned());
            if doc.histogram {
                labels.insert("le".to_owned());
            }
        }
        for label in &refs.labels {
            assert!(labels.contains(label), "label {label} of {expr}");
        }
        for (label, value) in &refs.matched {
            if value.contains('$') || label == "instance" {
                continue;
            }
            let named = refs
                .metrics
                .iter()
                .filter_map(|s| documented(&readme, s))
                .any(|(_, doc)| doc.text.contains(&format!("`{value}`")));
            assert!(
                named,
                "{label}=\"{value}\" is not a documented value: {expr}"
            );
        }
    }
    let all: BTreeSet<String> = readme.keys().cloned().collect();
    assert_eq!(queried, all, "every documented metric has a panel");
}

#[test]
fn the_dashboard_has_its_variables_and_key_panels() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(!dashboard["uid"].as_str().unwrap().is_empty());
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(
        variable("route")["definition"],
        "label_values(pgsni_active_connections, route)"
    );

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in &panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "unique panel ids"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the datasource variable",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has queries", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            exprs.push(target["expr"].as_str().unwrap().replace(' ', ""));
        }
    }
    let has = |fragment: &str| {
        let fragment = fragment.replace(' ', "");
        exprs.iter().any(|e| e.contains(&fragment))
    };
    assert!(has("sum by (outcome) (rate(pgsni_connections_total{"));
    assert!(has(r#"outcome!="routed""#), "refusals");
    assert!(has("sum by (route) (pgsni_active_connections{"));
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            has(&format!(
                "histogram_quantile({q}, sum by (le) (rate(pgsni_handshake_seconds_bucket{{"
            )),
            "handshake p{q}"
        );
    }
    assert!(has("sum by (direction) (rate(pgsni_forwarded_bytes_total{"));
    assert!(has("sum by (route) (rate(pgsni_forwarded_bytes_total{"));
    assert!(has("sum by (result) (increase(pgsni_routes_reload_total{"));
    assert!(has("sum by (result) (rate(pgsni_cancel_requests_total{"));
    assert!(has("sum by (kind) (rate(pgsni_accept_errors_total{"));
    assert!(has(r#"route=~"$route""#), "the route variable is used");
}
