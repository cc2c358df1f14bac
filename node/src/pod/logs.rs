//! Container log files: `<dir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log`,
//! one file per run of a container, so `--previous` is the run before the last.

use std::path::{Path, PathBuf};

/// The node's log directory.
#[derive(Debug, Clone)]
pub struct LogDir(pub PathBuf);

impl LogDir {
    /// The directory of one pod's logs.
    pub fn pod_dir(&self, ns: &str, pod: &str, uid: &str) -> PathBuf {
        self.0.join(format!("{ns}_{pod}_{uid}"))
    }

    /// The path of one run's file (its directory is made).
    pub fn path(&self, ns: &str, pod: &str, uid: &str, container: &str, attempt: u32) -> PathBuf {
        let dir = self.pod_dir(ns, pod, uid).join(container);
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!("{attempt}.log"))
    }

    /// The file of one run of a container (created, appended to).
    pub fn open(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        container: &str,
        attempt: u32,
    ) -> std::io::Result<std::fs::File> {
        let dir = self.pod_dir(ns, pod, uid).join(container);
        std::fs::create_dir_all(&dir)?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{attempt}.log")))
    }

    /// The runs of a container on record, oldest first.
    pub fn attempts(&self, ns: &str, pod: &str, uid: &str, container: &str) -> Vec<(u32, PathBuf)> {
        let dir = self.pod_dir(ns, pod, uid).join(container);
        let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let n = e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()?;
                        Some((n, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Remove a pod's logs.
    pub fn remove(&self, ns: &str, pod: &str, uid: &str) {
        let _ = std::fs::remove_dir_all(self.pod_dir(ns, pod, uid));
    }
}

/// The last `n` lines of `bytes`.
pub fn tail(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// Read a whole log file (missing → empty).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_table() {
        let cases: &[(&[u8], usize, &[u8])] = &[
            (b"a\nb\nc\n", 2, b"b\nc\n"),
            (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
            (b"a\nb\nc", 1, b"c"),
            (b"a\nb\n", 0, b""),
            (b"", 3, b""),
        ];
        for (input, n, want) in cases {
            assert_eq!(
                tail(input, *n),
                *want,
                "{:?} {n}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
