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

    /// Rotate every container log file larger than `max_size`: its content
    /// moves to `<attempt>.log.1` (older ones shift up, at most
    /// `max_files - 1` kept) and the file is truncated in place, so the
    /// runtime that appends to it keeps writing (copy-and-truncate: a line
    /// written between the copy and the truncation is lost). Returns the
    /// files rotated.
    pub fn rotate(&self, max_size: u64, max_files: usize) -> Vec<PathBuf> {
        let mut rotated = Vec::new();
        let Ok(pods) = std::fs::read_dir(&self.0) else {
            return rotated;
        };
        for pod in pods.flatten() {
            let Ok(containers) = std::fs::read_dir(pod.path()) else {
                continue;
            };
            for c in containers.flatten() {
                let Ok(files) = std::fs::read_dir(c.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let path = f.path();
                    let is_log = path.extension().is_some_and(|e| e == "log");
                    let big = f
                        .metadata()
                        .is_ok_and(|m| m.is_file() && m.len() > max_size);
                    if is_log && big {
                        match rotate_one(&path, max_files) {
                            Ok(()) => rotated.push(path),
                            Err(e) => {
                                tracing::warn!(file = %path.display(), error = %e, "log rotation failed")
                            }
                        }
                    }
                }
            }
        }
        rotated
    }

    /// Remove a pod's logs.
    pub fn remove(&self, ns: &str, pod: &str, uid: &str) {
        let _ = std::fs::remove_dir_all(self.pod_dir(ns, pod, uid));
    }
}

/// `<file>.<n>` beside a log file.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn rotate_one(path: &Path, max_files: usize) -> std::io::Result<()> {
    let keep = max_files.saturating_sub(1).max(1);
    let _ = std::fs::remove_file(numbered(path, keep));
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    std::fs::copy(path, numbered(path, 1))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
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
    fn big_files_rotate_and_old_ones_go() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = LogDir(tmp.path().to_path_buf());
        let path = logs.path("ns", "p", "u", "c", 0);
        for round in 0..6 {
            std::fs::write(&path, format!("round {round} {}", "x".repeat(100))).unwrap();
            assert_eq!(logs.rotate(50, 3), vec![path.clone()]);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        }
        // Two rotated files kept (three with the current one), newest first.
        let one = std::fs::read_to_string(numbered(&path, 1)).unwrap();
        let two = std::fs::read_to_string(numbered(&path, 2)).unwrap();
        assert!(one.starts_with("round 5") && two.starts_with("round 4"));
        assert!(!numbered(&path, 3).exists());
        // Small files and rotated ones stay; attempts still lists runs only.
        std::fs::write(&path, "short").unwrap();
        assert!(logs.rotate(50, 3).is_empty());
        assert_eq!(logs.attempts("ns", "p", "u", "c").len(), 1);
    }

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
