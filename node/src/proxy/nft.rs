//! The one host side effect of the proxy: loading an nft script. `NftCli`
//! runs the real `nft -f -`; tests of the sync logic can record scripts instead.

use std::io::Write;
use std::process::{Command, Stdio};

use super::ProxyError;

/// Something that can load an nft script as one transaction.
pub trait Ruleset: Send + Sync {
    fn apply(&self, script: &str) -> Result<(), ProxyError>;

    /// `nft -j list chain ip <table> <chain>`: the chain's rules with their
    /// counters, as nft's JSON.
    fn list_chain(&self, table: &str, chain: &str) -> Result<String, ProxyError>;
}

/// `nft -f -` (Debian's `nftables` package).
#[derive(Debug, Default)]
pub struct NftCli;

impl Ruleset for NftCli {
    fn list_chain(&self, table: &str, chain: &str) -> Result<String, ProxyError> {
        let out = Command::new("nft")
            .args(["-j", "list", "chain", "ip", table, chain])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ProxyError::Nft(format!("run nft: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ProxyError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn apply(&self, script: &str) -> Result<(), ProxyError> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProxyError::Nft(format!("run nft: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| ProxyError::Nft(format!("write to nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ProxyError::Nft(format!("wait for nft: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ProxyError::Nft(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}
