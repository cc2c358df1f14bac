//! Calls from the control plane to node agents (logs, exec, port-forward,
//! usage): the one pooled HTTPS client, and where a Node's agent listens.
//!
//! **A server talks to agents over TLS that trusts only the cluster CA and
//! presents the API servers' client certificate (renewed in place).**

use serde_json::Value;

static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();

/// Trust only the CA of `ca_pem` and present `cert` when calling agents
/// (once per process, before the first call).
pub fn configure(ca_pem: &str, cert: &crate::pki::CertSlot) -> Result<(), crate::pki::PkiError> {
    let tls = crate::pki::client_config(ca_pem, Some(cert))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| crate::pki::PkiError::Parse(e.to_string()))?;
    let _ = CLIENT.set(client);
    Ok(())
}

/// The one HTTPS client for calls to node agents, so their connections are
/// pooled rather than set up per request.
pub fn client() -> reqwest::Client {
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

/// The base URL of a Node's agent API (`https://{InternalIP}:{kubelet port}`).
pub fn base_url(node: &Value) -> Option<String> {
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let addr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| s(a, "/type").as_deref() == Some("InternalIP"))
        .and_then(|a| s(a, "/address"))
        .filter(|a| !a.is_empty())?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p != 0)?;
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr
    };
    Some(format!("https://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_base_urls() {
        let n = serde_json::json!({"status": {"addresses": [{"type": "Hostname", "address": "h"},
            {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(base_url(&n).as_deref(), Some("https://10.0.0.2:10250"));
        let v6 = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "::1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}});
        assert_eq!(base_url(&v6).as_deref(), Some("https://[::1]:1"));
        assert_eq!(base_url(&serde_json::json!({})), None);
    }
}
