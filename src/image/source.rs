//! Where `skiff image import` reads from: a tar archive (indexed once — name,
//! offset and size of each file — then read in place, so blobs stream from
//! the file and are never held whole), a `.tar.gz` (gunzipped to a temporary
//! file first) or a directory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

enum Kind {
    Tar {
        file: PathBuf,
        entries: HashMap<String, Entry>,
        _temp: Option<tempfile::TempPath>,
    },
    Dir(PathBuf),
}

/// A tar archive or a directory, read by relative path.
pub struct Source {
    what: String,
    kind: Kind,
}

/// `a/./b/../c` → `a/c`; `None` when it leaves the root.
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out.join("/"))
}

impl Source {
    /// Open `path`: a directory, a tar archive, or a gzip-compressed one.
    pub fn open(path: &Path) -> Result<Source> {
        let what = path.display().to_string();
        if path.is_dir() {
            return Ok(Source {
                what,
                kind: Kind::Dir(path.to_path_buf()),
            });
        }
        let mut f = File::open(path).with_context(|| format!("open {what}"))?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).with_context(|| format!("read {what}"))?;
        if n == 2 && magic == [0x1f, 0x8b] {
            f.seek(SeekFrom::Start(0))?;
            let tmp = tempfile::NamedTempFile::new().context("create a temporary file")?;
            let mut out = tmp.reopen()?;
            std::io::copy(&mut skiff_control::imagestore::gunzip(f), &mut out)
                .with_context(|| format!("gunzip {what}"))?;
            let tmp = tmp.into_temp_path();
            let entries = index(&tmp).with_context(|| format!("{what} is not a tar archive"))?;
            return Ok(Source {
                what,
                kind: Kind::Tar {
                    file: tmp.to_path_buf(),
                    entries,
                    _temp: Some(tmp),
                },
            });
        }
        let entries = index(path).with_context(|| format!("{what} is not a tar archive"))?;
        Ok(Source {
            what,
            kind: Kind::Tar {
                file: path.to_path_buf(),
                entries,
                _temp: None,
            },
        })
    }

    /// The archive or directory, for messages.
    pub fn name(&self) -> &str {
        &self.what
    }

    /// Where `name` is: file offset and size (tar), after symbolic links.
    fn locate(&self, name: &str) -> Option<(u64, u64)> {
        let Kind::Tar { entries, .. } = &self.kind else {
            return None;
        };
        let mut name = normalize(name)?;
        for _ in 0..8 {
            match entries.get(&name)? {
                Entry::File { offset, size } => return Some((*offset, *size)),
                Entry::Link(to) => name = to.clone(),
            }
        }
        None
    }

    fn dir_path(&self, name: &str) -> Option<PathBuf> {
        let Kind::Dir(root) = &self.kind else {
            return None;
        };
        Some(root.join(normalize(name)?))
    }

    /// The size of file `name`, if present.
    pub fn size(&self, name: &str) -> Option<u64> {
        match &self.kind {
            Kind::Tar { .. } => self.locate(name).map(|(_, s)| s),
            Kind::Dir(_) => std::fs::metadata(self.dir_path(name)?)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.size(name).is_some()
    }

    /// A reader of file `name`, streaming from the archive.
    pub fn reader(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let missing = || anyhow::anyhow!("{} has no {name}", self.what);
        match &self.kind {
            Kind::Tar { file, .. } => {
                let (offset, size) = self.locate(name).ok_or_else(missing)?;
                let mut f = File::open(file).with_context(|| format!("open {}", self.what))?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(f.take(size)))
            }
            Kind::Dir(_) => {
                let p = self.dir_path(name).ok_or_else(missing)?;
                Ok(Box::new(File::open(&p).map_err(|_| missing())?))
            }
        }
    }

    /// The whole of a small file (metadata: at most `limit` bytes).
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .size(name)
            .ok_or_else(|| anyhow::anyhow!("{} has no {name}", self.what))?;
        if size > limit {
            bail!("{name} in {} is too large ({size} bytes)", self.what);
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.reader(name)?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Name → entry of every file and symbolic link in a tar archive.
fn index(path: &Path) -> Result<HashMap<String, Entry>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut out = HashMap::new();
    for entry in archive.entries_with_seek()? {
        let entry = entry?;
        let Some(name) = normalize(&entry.path()?.to_string_lossy()) else {
            continue;
        };
        let t = entry.header().entry_type();
        if t.is_file() {
            out.insert(
                name,
                Entry::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
            );
        } else if t.is_symlink() || t.is_hard_link() {
            let Some(to) = entry.link_name()? else {
                continue;
            };
            let to = to.to_string_lossy();
            // Symbolic links are relative to their directory, hard links to the root.
            let full = match (t.is_symlink(), name.rsplit_once('/')) {
                (true, Some((dir, _))) => format!("{dir}/{to}"),
                _ => to.to_string(),
            };
            if let Some(to) = normalize(&full) {
                out.insert(name, Entry::Link(to));
            }
        }
    }
    if out.is_empty() {
        bail!("no files");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalize("a/../b/./c").as_deref(), Some("b/c"));
        assert_eq!(normalize("../x"), None);
    }
}
