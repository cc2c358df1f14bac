//! Helm v4 (helm-python-sdk: Helm's Go SDK behind Python) against a server:
//! the chart `helm create` makes installs, upgrades and uninstalls, and
//! nothing of the release is left. Helm's typed client sends DeleteOptions
//! as Kubernetes protobuf (client-go since 1.32), which the API decodes.

use std::process::Command;

use anyhow::Result;

use crate::common::{run, single_server};

#[test]
fn helm_installs_upgrades_and_uninstalls_the_default_chart() -> Result<()> {
    let (dir, s) = single_server()?;
    let script = format!(
        "import helm_python as helm\n\
         cfg = helm.Config(kubeconfig_path={kc:?}, namespace='default')\n\
         chart = helm.Chart.create('demo', {charts:?})\n\
         cfg.install(chart, 'demo')\n\
         print('installed')\n\
         cfg.upgrade(chart, 'demo', {{'replicaCount': 2}})\n\
         print('upgraded')\n\
         cfg.uninstall('demo')\n\
         print('uninstalled')\n",
        kc = s.kubeconfig().to_string_lossy(),
        charts = dir.path().to_string_lossy(),
    );
    let out = run(Command::new("python3").args(["-c", &script]))?;
    assert_eq!(out, "installed\nupgraded\nuninstalled\n");
    // Nothing of the release stays: its objects and its release Secrets.
    for kind in ["deployment", "service", "serviceaccount"] {
        let left = s.k(&[
            "get",
            kind,
            "-l",
            "app.kubernetes.io/instance=demo",
            "-o",
            "name",
        ]);
        assert_eq!(left, "", "{kind}s of the release are gone");
    }
    let releases = s.k(&["get", "secrets", "-l", "owner=helm", "-o", "name"]);
    assert_eq!(releases, "", "the release history is gone");
    Ok(())
}
