//! What every namespace has, as Kubernetes' `serviceaccount` and
//! `root-ca-cert-publisher` controllers keep it: a ServiceAccount `default`
//! and a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA (what
//! in-cluster clients verify the API server with).
//!
//! **Level-triggered per namespace: deleting either brings it back, an
//! edited `ca.crt` is put back; nothing is made in a namespace that is being
//! deleted.**

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::controllers::framework::{Action, Controller, Informer, Key, Queue, Reconciler, Result};
use crate::controllers::registration::Ctx;

use crate::storage::serviceaccount::{DEFAULT_ACCOUNT, ROOT_CA_CONFIGMAP};

pub struct NamespaceDefaults {
    client: kube::Client,
    ca_pem: String,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    config_maps: Arc<Informer<ConfigMap>>,
}

impl NamespaceDefaults {
    fn root_ca(&self, ns: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIGMAP.into()),
                namespace: Some(ns.into()),
                annotations: Some(BTreeMap::from([(
                    "kubernetes.io/description".to_string(),
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("ca.crt".to_string(), self.ca_pem.clone())])),
            ..Default::default()
        }
    }
}

/// A create that lost a race with another writer (or the cache) is fine.
fn created<T>(r: kube::Result<T>) -> kube::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Reconciler for NamespaceDefaults {
    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action> {
        let ns_name = key.name.as_str();
        let Some(ns) = self.namespaces.get(&Key::new("", ns_name)) else {
            return Ok(Action::await_change());
        };
        let terminating = ns.metadata.deletion_timestamp.is_some()
            || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        if terminating {
            return Ok(Action::await_change());
        }
        if self
            .accounts
            .get(&Key::new(ns_name, DEFAULT_ACCOUNT))
            .is_none()
        {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns_name);
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_ACCOUNT.into()),
                    namespace: Some(ns_name.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            created(api.create(&PostParams::default(), &sa).await)?;
            tracing::info!(namespace = ns_name, "created ServiceAccount default");
        }
        if self.ca_pem.is_empty() {
            return Ok(Action::await_change());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns_name);
        match self.config_maps.get(&Key::new(ns_name, ROOT_CA_CONFIGMAP)) {
            None => {
                created(
                    api.create(&PostParams::default(), &self.root_ca(ns_name))
                        .await,
                )?;
            }
            Some(cm) => {
                let current = cm.data.as_ref().and_then(|d| d.get("ca.crt"));
                if current != Some(&self.ca_pem) {
                    let mut fixed = (*cm).clone();
                    fixed
                        .data
                        .get_or_insert_default()
                        .insert("ca.crt".into(), self.ca_pem.clone());
                    api.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &fixed)
                        .await?;
                }
            }
        }
        Ok(Action::await_change())
    }
}

pub fn start(ctx: &mut Ctx<'_>) {
    let namespaces = ctx.informer::<Namespace>();
    let accounts = ctx.informer::<ServiceAccount>();
    let config_maps = ctx.informer::<ConfigMap>();
    let c = Arc::new(NamespaceDefaults {
        client: ctx.client.clone(),
        ca_pem: ctx.settings.root_ca.clone(),
        namespaces: namespaces.clone(),
        accounts: accounts.clone(),
        config_maps: config_maps.clone(),
    });
    let q = Queue::new();
    {
        let q = q.clone();
        namespaces.on(move |_, n| q.add(Key::new("", n.metadata.name.as_deref().unwrap_or(""))));
    }
    {
        let q = q.clone();
        accounts.on(move |_, sa| {
            if sa.metadata.name.as_deref() == Some(DEFAULT_ACCOUNT) {
                q.add(Key::new("", sa.metadata.namespace.as_deref().unwrap_or("")));
            }
        });
    }
    {
        let q = q.clone();
        config_maps.on(move |_, cm| {
            if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(Key::new("", cm.metadata.namespace.as_deref().unwrap_or("")));
            }
        });
    }
    let all = namespaces.clone();
    ctx.run(
        Controller::new(c, q)
            .after_sync(vec![
                (&namespaces).into(),
                (&accounts).into(),
                (&config_maps).into(),
            ])
            .resync(move || {
                all.list("")
                    .iter()
                    .map(|n| Key::new("", n.metadata.name.as_deref().unwrap_or("")))
                    .collect()
            }),
    );
}
