//! Faults on disk: a torn write, as a power cut leaves one.

use std::path::Path;

/// A small deterministic generator (print the seed to replay a run).
pub struct Rng(pub u64);

impl Rng {
    pub fn step(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.step() % n.max(1)
    }
}

/// Sector size a torn write is cut at.
pub const SECTOR: usize = 512;

/// What [`tear`] did to a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Tear {
    /// Nothing changed since the last acknowledged write.
    Nothing,
    /// Bytes `[from, to)` reverted to what they were at the last acknowledgement.
    Reverted { from: usize, to: usize },
    /// The file's new tail cut at `len`.
    Cut { len: usize },
}

/// Tear what changed in `path` since `before` (its bytes at the last
/// acknowledged write): revert the end of one changed sector, or cut the
/// new tail of a file that grew. Only what was never acknowledged changes.
pub fn tear(path: &Path, before: &[u8], rng: &mut Rng) -> std::io::Result<Tear> {
    let mut now = std::fs::read(path)?;
    let changed: Vec<usize> = (0..now.len().div_ceil(SECTOR))
        .filter(|i| {
            let (a, b) = (i * SECTOR, ((i + 1) * SECTOR).min(now.len()));
            before.get(a..b) != Some(&now[a..b])
        })
        .collect();
    if changed.is_empty() {
        return Ok(Tear::Nothing);
    }
    if now.len() > before.len() && rng.below(3) == 0 {
        let len = before.len() + rng.below((now.len() - before.len()) as u64) as usize;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(len as u64)?;
        return Ok(Tear::Cut { len });
    }
    let sector = changed[rng.below(changed.len() as u64) as usize];
    let end = ((sector + 1) * SECTOR).min(now.len());
    let from = sector * SECTOR + rng.below((end - sector * SECTOR) as u64) as usize;
    for (i, b) in now.iter_mut().enumerate().take(end).skip(from) {
        *b = before.get(i).copied().unwrap_or(0);
    }
    std::fs::write(path, &now)?;
    Ok(Tear::Reverted { from, to: end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_changed_is_torn() {
        let dir = std::env::temp_dir().join(format!("skiff-tear-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("db");
        let before = vec![1u8; 4 * SECTOR];
        let mut after = before.clone();
        after[2 * SECTOR + 10..3 * SECTOR].fill(2);
        after.extend(vec![3u8; SECTOR]);
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for _ in 0..50 {
            std::fs::write(&f, &after).unwrap();
            let t = tear(&f, &before, &mut rng).unwrap();
            let now = std::fs::read(&f).unwrap();
            // The first two sectors, never changed, are intact.
            assert_eq!(now[..2 * SECTOR], before[..2 * SECTOR], "{t:?}");
            match t {
                Tear::Cut { len } => assert!(len >= before.len() && now.len() == len),
                Tear::Reverted { from, to } => {
                    assert!(from >= 2 * SECTOR && to <= after.len() && from < to)
                }
                Tear::Nothing => panic!("something changed"),
            }
        }
        std::fs::write(&f, &before).unwrap();
        assert_eq!(tear(&f, &before, &mut rng).unwrap(), Tear::Nothing);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
