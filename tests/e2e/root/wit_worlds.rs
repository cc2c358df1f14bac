//! The worlds in `wit/` end to end: a Wasm pod whose component imports an
//! interface Skiff does not host (`wasi:keyvalue/store`) is refused before it
//! runs, with a container waiting reason and a pod event that name the
//! interface, as `kubectl get pod`, `kubectl describe` and `kubectl get events`
//! show them.

use crate::common;
use crate::common::components;

use std::time::Duration;

use anyhow::Result;
use common::eventually;

const MISSING: &str = "wasi:keyvalue/store@0.2.0-draft";

#[test]
fn a_component_importing_an_unhosted_interface_gets_an_event_naming_it() -> Result<()> {
    let c = common::one_node(&[])?;
    let s = &c.s;
    let dir = tempfile::tempdir()?;
    let kv = dir.path().join("kv.wasm");
    std::fs::write(
        &kv,
        components::component(components::KEYVALUE_HTTP, "test:kv/kv-http"),
    )?;
    s.import_wasm(&kv, "acc/kv:v1")?;
    s.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: kv
spec:
  runtimeClassName: wasm
  containers:
  - name: web
    image: acc/kv:v1
    ports:
    - containerPort: 8080
"#,
    );
    let waiting = eventually(Duration::from_secs(60), || {
        let pod = s.json(&["pod", "kv"]);
        let w = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        let (reason, message) = (w["reason"].as_str()?, w["message"].as_str()?);
        (reason == "CreateContainerError" && message.contains(MISSING))
            .then(|| (pod["status"]["phase"].clone(), message.to_string()))
    });
    let Some((phase, message)) = waiting else {
        panic!(
            "no waiting reason naming {MISSING}: {}",
            s.json(&["pod", "kv"])["status"]
        );
    };
    assert_eq!(phase, "Pending");
    assert!(
        message.contains(&format!(
            "the component imports {MISSING}, which this node does not provide"
        )),
        "{message}"
    );
    let events = s.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=kv",
    ]);
    assert!(
        events
            .lines()
            .any(|l| l.contains("Failed") && l.contains(MISSING)),
        "{events}"
    );
    let describe = s.k(&["describe", "pod", "kv"]);
    assert!(
        describe.contains("CreateContainerError") && describe.contains(MISSING),
        "{describe}"
    );
    Ok(())
}
