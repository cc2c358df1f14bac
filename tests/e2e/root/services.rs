//! Services end to end with the real kubectl: endpoints follow pods and their
//! readiness, the node proxy serves ClusterIPs from the host, from a client
//! namespace and from pods, NodePort and LoadBalancer answer on the node's
//! address, the cluster DNS resolves Services and headless Services from a
//! pod's namespace, bad Services are refused, and nothing leaks.

use crate::common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{ClientNs, Cluster, eventually, in_netns};
use serde_json::Value;

fn web(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      volumes:
      - name: state
        emptyDir: {{}}
      containers:
      - name: web
        image: acc/hello:v1
        ports:
        - name: http
          containerPort: 8080
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef: {{fieldPath: metadata.name}}
        volumeMounts:
        - name: state
          mountPath: /state
        readinessProbe:
          httpGet: {{path: "/healthz?unless=/state/unready", port: http}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

fn service(name: &str, app: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {app}}}
  ports:
  - name: http
    port: 80
    targetPort: http
{extra}"#
    )
}

/// The ready addresses of Service `name`'s Endpoints.
fn endpoint_ips(c: &Cluster, name: &str) -> Vec<String> {
    let v = c.s.json(&["endpoints", name]);
    let mut ips: Vec<String> = v["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(String::from))
        .collect();
    ips.sort();
    ips
}

fn wait_endpoints(c: &Cluster, name: &str, n: usize) -> Result<Vec<String>> {
    eventually(Duration::from_secs(60), || {
        let ips = endpoint_ips(c, name);
        (ips.len() == n).then_some(ips)
    })
    .with_context(|| {
        format!(
            "{name} never had {n} ready endpoints: {:?}",
            endpoint_ips(c, name)
        )
    })
}

/// GET `url` from the host: the pod name that answered.
fn who_host(url: &str) -> Result<String> {
    let (code, body) = common::http_get(url)?;
    if code != 200 {
        bail!("{url}: {code} {body}");
    }
    Ok(body.trim().to_string())
}

/// GET `url` with curl inside namespace `ns`.
fn who_in(ns: &str, url: &str) -> Result<String> {
    Ok(in_netns(ns, &["curl", "-sS", "--max-time", "5", url])?
        .trim()
        .to_string())
}

/// Ask `n` times; the set of pods that answered (errors fail the test).
fn spread(n: usize, mut ask: impl FnMut() -> Result<String>) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(ask()?);
    }
    Ok(seen)
}

fn pod_names(c: &Cluster, app: &str) -> BTreeSet<String> {
    let v = c.s.json(&["pods", "-l", &format!("app={app}")]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn pod_ip(c: &Cluster, pod: &str) -> String {
    let v = c.s.json(&["pod", pod]);
    v["status"]["podIP"].as_str().unwrap_or("").to_string()
}

fn nft_table(c: &Cluster) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &c.net.nft_table(0)])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn cluster_ip_endpoints_readiness_node_port_load_balancer_and_dns() -> Result<()> {
    let net = common::TestNet::claim();
    let node_ip = net.add_node_ip(0)?;
    let c = common::one_node_on(net, &["--node-ip", &node_ip])?;
    let s = &c.s;
    s.apply(&web("web", 3));
    s.apply(&service("web", "web", ""));
    let ips = wait_endpoints(&c, "web", 3)?;
    let svc = s.json(&["svc", "web"]);
    let cip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(
        cip.starts_with(&format!("10.96.{}.", c.net.octet)),
        "ClusterIP {cip} from the service CIDR"
    );
    // EndpointSlices carry the same addresses, labelled with the Service.
    let slices = s.json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let mut slice_ips: Vec<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect();
    slice_ips.sort();
    assert_eq!(slice_ips, ips);
    let url = format!("http://{cip}/env?name=POD_NAME");
    let all = pod_names(&c, "web");
    // From the host.
    let seen = eventually(Duration::from_secs(20), || {
        let seen = spread(30, || who_host(&url)).ok()?;
        (seen == all).then_some(seen)
    });
    assert_eq!(
        seen.as_ref(),
        Some(&all),
        "all three pods answer on the ClusterIP from the host"
    );
    // From a client namespace on the node's bridge.
    let (_, bridge) = c.net.node(0);
    let base = format!("10.88.{}", c.net.octet);
    let client = ClientNs::new(
        &format!("skc{}", c.net.octet),
        &bridge,
        &format!("{base}.62"),
        26,
        &format!("{base}.1"),
    )?;
    let seen = spread(30, || who_in(&client.name, &url))?;
    assert_eq!(seen, all, "all three pods answer from a client namespace");
    // From inside another pod's namespace.
    s.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  containers:\n  - name: c\n    image: acc/hello:v1\n",
    );
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=60s",
    ]);
    let pod_ns = c.net.netns_of(0, &pod_ip(&c, "client"));
    let seen = spread(30, || who_in(&pod_ns, &url))?;
    assert_eq!(seen, all, "all three pods answer from a pod's namespace");
    // From inside a pod of the Service itself (it is one of the endpoints:
    // hairpin).
    let first = all.iter().next().unwrap().clone();
    let own_ns = c.net.netns_of(0, &pod_ip(&c, &first));
    let seen = spread(30, || who_in(&own_ns, &url))?;
    assert_eq!(
        seen, all,
        "all three pods answer from one of them, itself included"
    );

    // A pod that fails readiness leaves the endpoints and gets no traffic.
    let sick_ip = pod_ip(&c, &first);
    who_host(&format!(
        "http://{sick_ip}:8080/write?path=/state/unready&data=1"
    ))?;
    wait_endpoints(&c, "web", 2)?;
    // The proxy follows the EndpointSlices, written beside the Endpoints.
    let healthy = eventually(Duration::from_secs(10), || {
        let seen = spread(30, || who_host(&url)).ok()?;
        (!seen.contains(&first)).then_some(seen)
    });
    assert!(
        healthy.is_some_and(|seen| seen.len() == 2),
        "{first} is not ready and must get no traffic"
    );
    who_host(&format!("http://{sick_ip}:8080/rm?path=/state/unready"))?;
    wait_endpoints(&c, "web", 3)?;

    // Scaling changes the endpoints and the traffic.
    s.k(&["scale", "deployment", "web", "--replicas=1"]);
    wait_endpoints(&c, "web", 1)?;
    // The proxy follows the EndpointSlices; under load that can take a while.
    let seen = eventually(Duration::from_secs(45), || {
        let seen = spread(10, || who_host(&url)).ok()?;
        (seen.len() == 1).then_some(seen)
    });
    assert!(seen.is_some(), "one pod answers after scaling to 1");
    s.k(&["scale", "deployment", "web", "--replicas=3"]);
    wait_endpoints(&c, "web", 3)?;
    let all = pod_names(&c, "web");

    // sessionAffinity ClientIP: one client keeps its pod.
    s.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    let sticky = eventually(Duration::from_secs(10), || {
        let seen = spread(15, || who_in(&client.name, &url)).ok()?;
        (seen.len() == 1).then_some(seen)
    });
    assert!(
        sticky.is_some(),
        "ClientIP affinity keeps one client on one pod"
    );
    s.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);

    // NodePort on the node's address, from the host and from the client namespace.
    s.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let svc = s.json(&["svc", "web"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0);
    let range = c.net.node_ports();
    let (lo, hi) = range.split_once('-').unwrap();
    assert!(
        (lo.parse().unwrap()..=hi.parse().unwrap()).contains(&node_port),
        "nodePort {node_port} in {range}"
    );
    let np_url = format!("http://{node_ip}:{node_port}/env?name=POD_NAME");
    let answered = eventually(Duration::from_secs(10), || who_host(&np_url).ok());
    assert!(
        answered.is_some_and(|p| all.contains(&p)),
        "NodePort answers on the node address"
    );
    assert!(all.contains(&who_in(&client.name, &np_url)?));

    // LoadBalancer: the node's address becomes the ingress IP and answers.
    s.k(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    let ingress = eventually(Duration::from_secs(20), || {
        let v = s.json(&["svc", "web"]);
        v.pointer("/status/loadBalancer/ingress/0/ip")
            .and_then(Value::as_str)
            .map(String::from)
    });
    assert_eq!(ingress.as_deref(), Some(node_ip.as_str()));
    let got = s.k(&["get", "svc", "web"]);
    assert!(
        got.contains(&node_ip),
        "EXTERNAL-IP shows the ingress: {got}"
    );
    let lb_url = format!("http://{node_ip}:80/env?name=POD_NAME");
    let answered = eventually(Duration::from_secs(10), || who_host(&lb_url).ok());
    assert!(
        answered.is_some_and(|p| all.contains(&p)),
        "the LoadBalancer ingress answers"
    );

    // Cluster DNS from a pod's namespace: the Service, its short name through
    // the search path, and a headless Service's pod addresses.
    s.apply(&service("web-headless", "web", "  clusterIP: None\n"));
    let fqdn = "web.default.svc.cluster.local";
    let resolved = eventually(Duration::from_secs(20), || {
        in_netns(&pod_ns, &["getent", "hosts", fqdn]).ok()
    })
    .unwrap_or_default();
    assert!(
        resolved.starts_with(&cip),
        "{fqdn} resolves to {cip}: {resolved:?}"
    );
    let short = in_netns(&pod_ns, &["getent", "hosts", "web"])?;
    assert!(
        short.starts_with(&cip),
        "the search path resolves web: {short:?}"
    );
    let ips = wait_endpoints(&c, "web-headless", 3)?;
    let headless = eventually(Duration::from_secs(20), || {
        let out = in_netns(
            &pod_ns,
            &[
                "getent",
                "ahostsv4",
                "web-headless.default.svc.cluster.local",
            ],
        )
        .ok()?;
        let mut got: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        got.sort();
        (got == ips).then_some(got)
    });
    assert_eq!(
        headless.as_ref(),
        Some(&ips),
        "the headless Service resolves to the pod IPs"
    );
    // A name served by the Service answers by name from a pod too.
    let by_name = who_in(&pod_ns, "http://web/env?name=POD_NAME")?;
    assert!(all.contains(&by_name));

    // A selector that matches nothing: connection refused at once, not a hang.
    s.apply(&service("nobody", "nothing-has-this", ""));
    wait_endpoints(&c, "nobody", 0)?;
    let nobody = s.json(&["svc", "nobody"]);
    let nip = nobody["spec"]["clusterIP"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let started = std::time::Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("http://{nip}/")])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    // curl's 7: the connection was refused (a TCP reset), not a timeout.
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl: connection refused: {err}"
    );
    eprintln!("refused in {:?}", started.elapsed());
    let out = Command::new("ip")
        .args(["netns", "exec", &pod_ns, "curl", "-sS", "--max-time", "5"])
        .arg(format!("http://{nip}/"))
        .output()?;
    assert_eq!(out.status.code(), Some(7), "refused from a pod too");

    // Deleting the Services removes their rules.
    assert!(nft_table(&c).contains(&cip));
    s.k(&["delete", "svc", "web", "nobody", "web-headless"]);
    let gone = eventually(Duration::from_secs(10), || {
        (!nft_table(&c).contains(&cip)).then_some(())
    });
    assert!(
        gone.is_some(),
        "the rules of a deleted Service go: {}",
        nft_table(&c)
    );
    drop(client);
    Ok(())
}

#[test]
fn bad_services_are_refused_and_addresses_are_released() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let octet = c.net.octet;
    // Outside the range.
    let r = s.try_apply(&service("outside", "x", "  clusterIP: 10.97.0.5\n"));
    assert!(!r.ok);
    assert!(
        r.stderr.contains("Invalid") && r.stderr.contains("not in the valid range"),
        "{}",
        r.stderr
    );
    // Taken.
    let want = format!("10.96.{octet}.77");
    s.apply(&service("first", "x", &format!("  clusterIP: {want}\n")));
    let r = s.try_apply(&service("second", "x", &format!("  clusterIP: {want}\n")));
    assert!(!r.ok);
    assert!(r.stderr.contains("already allocated"), "{}", r.stderr);
    assert!(s.not_found(&["svc", "second"]), "nothing stored");
    // A NodePort outside the range.
    let r = s.try_apply(&format!(
        "{}  type: NodePort\n",
        service("np", "x", "").replace("targetPort: http", "targetPort: http\n    nodePort: 80")
    ));
    assert!(!r.ok);
    assert!(
        r.stderr.contains("provided port is not in the valid range"),
        "{}",
        r.stderr
    );
    // A released address can be taken again.
    s.k(&["delete", "svc", "first"]);
    s.apply(&service("second", "x", &format!("  clusterIP: {want}\n")));
    let v = s.json(&["svc", "second"]);
    assert_eq!(v["spec"]["clusterIP"], want.as_str());
    assert!(s.not_found(&["svc", "first"]));
    // An ExternalName Service has no ClusterIP.
    s.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: db.example.org\n",
    );
    let v = s.json(&["svc", "ext"]);
    assert!(v["spec"].get("clusterIP").is_none(), "{v}");
    Ok(())
}

/// Two "hosts" for node agents: network namespaces joined by a test bridge
/// (`10.86.<octet>.0/24`, the host at `.1`, node `i` at `.1i`); removed on drop.
struct Lan {
    bridge: String,
    hosts: Vec<String>,
}

impl Lan {
    fn new(octet: u8, n: usize) -> Result<Lan> {
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("ip").args(args).output()?;
            if !out.status.success() {
                bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let lan = Lan {
            bridge: format!("skb{octet}"),
            hosts: (1..=n).map(|i| format!("skh{octet}n{i}")).collect(),
        };
        lan.clean();
        run(&["link", "add", &lan.bridge, "type", "bridge"])?;
        run(&[
            "addr",
            "add",
            &format!("10.86.{octet}.1/24"),
            "dev",
            &lan.bridge,
        ])?;
        run(&["link", "set", &lan.bridge, "up"])?;
        for (i, h) in lan.hosts.iter().enumerate() {
            let (outside, inside) = (format!("{h}o"), format!("{h}i"));
            run(&["netns", "add", h])?;
            run(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            run(&["link", "set", &inside, "netns", h])?;
            run(&["link", "set", &outside, "master", &lan.bridge, "up"])?;
            let addr = format!("10.86.{octet}.{}/24", 11 + i);
            run(&["-n", h, "addr", "add", &addr, "dev", &inside])?;
            run(&["-n", h, "link", "set", &inside, "up"])?;
            run(&["-n", h, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    fn clean(&self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).output();
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{h}o")])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.clean();
    }
}

#[test]
fn two_nodes_reach_each_others_pods_by_ip_and_by_service_name() -> Result<()> {
    let net = common::TestNet::claim();
    let o = net.octet;
    // Nothing for this test's pod or Service addresses may leave the machine
    // from the host either (no agent runs in the host's namespace here).
    for cidr in [net.cluster_cidr(), net.service_cidr()] {
        let out = Command::new("ip")
            .args(["route", "replace", "unreachable", &cidr])
            .output()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lan = Lan::new(o, 2)?;
    let root = tempfile::tempdir()?;
    let args = net.server_args(0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = common::Server::new(&root.path().join("s"), &args);
    s.api = format!("10.86.{o}.1:{}", common::free_port());
    s.start()?;
    s.wait_ready(Duration::from_secs(30))?;
    let mut agents = Vec::new();
    for (i, host) in lan.hosts.iter().enumerate() {
        let (node, ip) = (net.node(i + 1).0, format!("10.86.{o}.{}", 11 + i));
        let dir = root.path().join(&node);
        let extra = ["--warm-netns", "1", "--node-ip", &ip];
        let a = common::Agent::join_in(&s, &net, i + 1, &dir, Some(host), &extra)?;
        a.wait_ready(&s, &node);
        agents.push(a);
    }
    s.import_wasm(
        &common::example_wasm("hello-wasm", "hello_wasm.wasm"),
        "acc/hello:v1",
    )?;
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: web\n    image: acc/hello:v1\n    ports:\n    - {{name: http, containerPort: 8080}}\n    env:\n    - name: POD_NAME\n      valueFrom:\n        fieldRef: {{fieldPath: metadata.name}}\n"
        )
    };
    s.apply(&pod("left", &net.node(1).0));
    s.apply(&pod("right", &net.node(2).0));
    s.apply(&service("right", "right", ""));
    s.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/left",
        "pod/right",
        "--timeout=60s",
    ]);
    let ip_of = |p: &str| {
        s.json(&["pod", p])["status"]["podIP"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let (left, right) = (ip_of("left"), ip_of("right"));
    // host-gw: node 1 routes node 2's pod CIDR via node 2's address.
    let cidr2 = s.json(&["node", &net.node(2).0])["spec"]["podCIDR"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let routes = in_netns(&lan.hosts[0], &["ip", "route"])?;
    assert!(
        routes.contains(&format!("{cidr2} via 10.86.{o}.12")),
        "node 1 routes {cidr2} via node 2: {routes}"
    );
    let left_ns = format!("skiff-{}-{}", net.node(1).0, left.replace('.', "-"));
    let by_ip = eventually(Duration::from_secs(20), || {
        who_in(&left_ns, &format!("http://{right}:8080/env?name=POD_NAME")).ok()
    });
    assert_eq!(
        by_ip.as_deref(),
        Some("right"),
        "left reaches right by pod IP across nodes"
    );
    let by_name = eventually(Duration::from_secs(20), || {
        who_in(
            &left_ns,
            "http://right.default.svc.cluster.local/env?name=POD_NAME",
        )
        .ok()
    });
    assert_eq!(
        by_name.as_deref(),
        Some("right"),
        "left reaches right by Service name"
    );
    let right_ns = format!("skiff-{}-{}", net.node(2).0, right.replace('.', "-"));
    assert_eq!(
        who_in(&right_ns, &format!("http://{left}:8080/env?name=POD_NAME"))?,
        "left",
        "and back"
    );
    drop(agents);
    drop(s);
    drop(lan);
    Ok(())
}

fn host_state(c: &Cluster) -> (usize, usize, String) {
    let (_, bridge) = c.net.node(0);
    let veths = Command::new("ip")
        .args(["-o", "link", "show", "master", &bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    let routes = Command::new("ip")
        .args(["route", "show", "table", "all"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    l.contains(&format!("10.88.{}.", c.net.octet))
                        || l.contains(&format!("10.96.{}.", c.net.octet))
                })
                .filter(|l| !l.starts_with("local 10.88") && !l.starts_with("broadcast"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    (veths, c.net.namespaces(0).len(), routes)
}

#[test]
fn two_hundred_cycles_of_pods_and_services_leak_nothing() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    // The warm pool (8 namespaces, each with its veth) fills in the background:
    // start from a full one.
    let before = eventually(Duration::from_secs(60), || {
        let st = host_state(&c);
        (st.0 == 8 && st.1 == 8).then_some(st)
    })
    .expect("the warm pool fills");
    let table_before = nft_table(&c);
    // The `kubernetes` Service is always there.
    let base = table_before.matches(" dnat to ").count();
    for round in 0..10 {
        let mut m = String::new();
        for k in 0..20 {
            let name = format!("cy{round}x{k}");
            m.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}, cycle: \"yes\"}}\nspec:\n  containers:\n  - name: web\n    image: acc/hello:v1\n    ports:\n    - {{name: http, containerPort: 8080}}\n---\n"
            ));
            m.push_str(&format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{cycle: \"yes\"}}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - {{port: 80, targetPort: 8080, protocol: {}}}\n---\n",
                if k % 4 == 0 { "UDP" } else { "TCP" }
            ));
        }
        s.apply(&m);
        let programmed = eventually(Duration::from_secs(60), || {
            let t = nft_table(&c);
            (t.matches(" dnat to ").count() == base + 20).then_some(())
        });
        assert!(
            programmed.is_some(),
            "round {round}: 20 Services programmed:\n{}",
            nft_table(&c)
        );
        s.k(&["delete", "pods,services", "-l", "cycle=yes", "--wait=true"]);
    }
    let settled = eventually(Duration::from_secs(30), || {
        (host_state(&c) == before && nft_table(&c) == table_before).then_some(())
    });
    assert!(
        settled.is_some(),
        "nothing leaked: before {before:?}, after {:?}\n{}",
        host_state(&c),
        nft_table(&c)
    );
    let left = s.k(&[
        "get",
        "endpoints,endpointslices",
        "-A",
        "-l",
        "cycle=yes",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "{left}");
    Ok(())
}

#[test]
fn a_rolling_update_of_wasm_pods_under_load_fails_no_request() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    s.apply(&web("roll", 3));
    s.apply(&service("roll", "roll", ""));
    wait_endpoints(&c, "roll", 3)?;
    let cip = s.json(&["svc", "roll"])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let url = format!("http://{cip}/");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed) = (
        std::sync::atomic::AtomicU64::new(0),
        std::sync::Mutex::new(Vec::<String>::new()),
    );
    let load = common::LoadCgroup::new();
    std::thread::scope(|sc| {
        // 64 clients, each on its own keep-alive connection.
        for _ in 0..64 {
            sc.spawn(|| {
                if let Some(cg) = &load {
                    cg.join();
                }
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(1)
                    .no_proxy()
                    .build()
                    .expect("client");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client.get(&url).send() {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes();
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(r) => failed
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        s.k(&["set", "env", "deployment/roll", "GREETING=v2"]);
        s.k(&["rollout", "status", "deployment/roll", "--timeout=120s"]);
        // Let the old pods finish going.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(load);
    let failed = failed.into_inner().unwrap();
    let ok = ok.into_inner();
    println!(
        "rolling update under 64 connections: {ok} requests answered, {} failed",
        failed.len()
    );
    assert!(ok > 0, "no request was answered");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    Ok(())
}
