//! What the store holds: the repositories that have tags (`/v2/_catalog`), the
//! tags of one repository (`/v2/<name>/tags/list`), and every stored manifest.

use std::collections::BTreeMap;

use super::{ImageError, Images, repo_key};
use crate::store::KeyValue;

impl Images {
    /// Every key under `prefix`, read in pages.
    pub(super) async fn list_all(&self, prefix: &str) -> Result<Vec<KeyValue>, ImageError> {
        let mut out: Vec<KeyValue> = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let (page, _) = self.store.list(prefix, start.as_deref(), 500).await?;
            let full = page.len() == 500;
            out.extend(page);
            match out.last() {
                Some(last) if full => start = Some(format!("{}\0", last.key)),
                _ => return Ok(out),
            }
        }
    }

    /// The repositories that have at least one tag, sorted.
    pub async fn repositories(&self) -> Result<Vec<String>, ImageError> {
        let mut repos: Vec<String> = self
            .list_all("/skiff/tags/")
            .await?
            .iter()
            .filter_map(|kv| kv.key.strip_prefix("/skiff/tags/")?.split_once('/'))
            .map(|(repo, _)| repo.replace("%2F", "/"))
            .collect();
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    /// The tags of `repository` and the manifest digest each names, by tag;
    /// `NotFound` when it has none.
    pub async fn tags(&self, repository: &str) -> Result<BTreeMap<String, String>, ImageError> {
        let prefix = format!("/skiff/tags/{}/", repo_key(repository));
        let tags: BTreeMap<String, String> = self
            .list_all(&prefix)
            .await?
            .into_iter()
            .filter_map(|kv| {
                let tag = kv.key.strip_prefix(&prefix)?.to_string();
                Some((tag, String::from_utf8_lossy(&kv.value).into_owned()))
            })
            .collect();
        if tags.is_empty() {
            return Err(ImageError::NotFound {
                what: "repository",
                name: repository.to_string(),
            });
        }
        Ok(tags)
    }
}
