//! Cached steps: a step's result is kept with the hash of everything it depends on, and a second run skips
//! every step whose key did not change.

use genir_io::write_atomic;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use genir_io::fnv1a;

/// A stable hash of a file's bytes, for cache keys of model weights: FNV-1a's step over 8-byte words (then
/// the tail bytes), read in 4 MiB pieces, so hundreds of megabytes take a fraction of a second. Any one changed
/// word changes the hash (each step is a bijection of the state).
pub fn hash_file(path: &Path, seed: u64) -> Result<u64> {
    use std::io::Read;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    let mut buf = vec![0u8; 1 << 22];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = f
                .read(&mut buf[filled..])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let (words, tail) = buf[..filled].split_at(filled / 8 * 8);
        for w in words.chunks_exact(8) {
            let word = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            h = (h ^ word).wrapping_mul(PRIME);
        }
        for b in tail {
            h = (h ^ u64::from(*b)).wrapping_mul(PRIME);
        }
        if filled < buf.len() {
            return Ok(h);
        }
    }
}

/// A cache key built from serialisable parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key(pub u64);

impl Key {
    /// The key of a value (its JSON form) combined with upstream keys.
    pub fn of<T: Serialize>(value: &T, upstream: &[Key]) -> Result<Key> {
        let mut h = fnv1a(serde_json::to_string(value)?.as_bytes(), 0);
        for k in upstream {
            h = fnv1a(&k.0.to_le_bytes(), h);
        }
        Ok(Key(h))
    }

    /// Hex form.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// What a finished step left behind.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stamp<T> {
    key: Key,
    seconds: f64,
    result: T,
}

/// One step's line in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Seconds the step took when it ran.
    pub seconds: f64,
    /// Whether this run took it from the cache.
    pub cached: bool,
}

/// The steps of one study, cached under `work/steps/`.
pub struct Steps {
    work: PathBuf,
    force: bool,
    /// Steps in the order they were asked for.
    pub records: Vec<StepRecord>,
}

impl Steps {
    /// Steps working in `work`; `force` ignores the cache.
    pub fn new(work: &Path, force: bool) -> Result<Self> {
        std::fs::create_dir_all(work.join("steps"))
            .with_context(|| format!("creating {}", work.display()))?;
        Ok(Self {
            work: work.to_path_buf(),
            force,
            records: Vec::new(),
        })
    }

    /// The folder of a step's files.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Runs step `name` unless a stamp with `key` exists; returns its result either way. The step gets its
    /// folder (created) and whether an earlier, unfinished attempt may be resumed (same key, no stamp).
    pub fn run<T, F>(&mut self, name: &str, key: Key, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&Path, bool) -> Result<T>,
    {
        let stamp_path = self.work.join("steps").join(format!("{name}.json"));
        let attempt_path = self.work.join("steps").join(format!("{name}.attempt"));
        if !self.force {
            if let Ok(text) = std::fs::read_to_string(&stamp_path) {
                match serde_json::from_str::<Stamp<T>>(&text) {
                    Ok(s) if s.key == key => {
                        tracing::info!("{name}: cached ({})", key.hex());
                        self.records.push(StepRecord {
                            name: name.to_string(),
                            seconds: s.seconds,
                            cached: true,
                        });
                        return Ok(s.result);
                    }
                    Ok(_) => tracing::info!("{name}: inputs changed, running again"),
                    Err(e) => tracing::warn!(
                        "{}: unreadable stamp ({e}), running again",
                        stamp_path.display()
                    ),
                }
            }
        }
        let dir = self.dir(name);
        // an unfinished attempt with the same key may be resumed; anything else starts clean
        let resumable = !self.force
            && std::fs::read_to_string(&attempt_path).is_ok_and(|k| k.trim() == key.hex())
            && dir.exists();
        if !resumable && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&attempt_path, key.hex().as_bytes())?;
        let started = Instant::now();
        let result = f(&dir, resumable).with_context(|| format!("step {name}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let stamp = Stamp {
            key,
            seconds,
            result,
        };
        write_atomic(
            &stamp_path,
            serde_json::to_string_pretty(&stamp)?.as_bytes(),
        )?;
        let _ = std::fs::remove_file(&attempt_path);
        self.records.push(StepRecord {
            name: name.to_string(),
            seconds,
            cached: false,
        });
        Ok(stamp.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_hash_is_the_word_hash_of_its_bytes_across_read_pieces() {
        // longer than one 4 MiB piece, with a tail that is not a whole word
        let bytes: Vec<u8> = (0..(1usize << 22) + 8 * 3 + 5)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, &bytes).unwrap();
        let mut want = 0xcbf2_9ce4_8422_2325u64 ^ 9;
        let (words, tail) = bytes.split_at(bytes.len() / 8 * 8);
        for w in words.chunks_exact(8) {
            want =
                (want ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x0100_0000_01b3);
        }
        for b in tail {
            want = (want ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(hash_file(&path, 9).unwrap(), want);
        assert_ne!(hash_file(&path, 10).unwrap(), want);
        // one byte changed, in the first piece: another hash
        let mut other = bytes.clone();
        other[100] ^= 1;
        std::fs::write(&path, &other).unwrap();
        assert_ne!(hash_file(&path, 9).unwrap(), want);
        let e = hash_file(&dir.path().join("absent"), 0).unwrap_err();
        assert!(format!("{e:#}").contains("absent"));
    }

    #[test]
    fn steps_are_cached_by_key_and_rerun_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = 0;
        let mut steps = Steps::new(dir.path(), false).unwrap();
        let k1 = Key::of(&("a", 1), &[]).unwrap();
        let v: u32 = steps
            .run("s", k1, |_, _| {
                runs += 1;
                Ok(7)
            })
            .unwrap();
        assert_eq!((v, runs), (7, 1));
        let mut steps = Steps::new(dir.path(), false).unwrap();
        let v: u32 = steps
            .run("s", k1, |_, _| {
                runs += 1;
                Ok(8)
            })
            .unwrap();
        assert_eq!((v, runs), (7, 1), "second run comes from the cache");
        assert!(steps.records[0].cached);
        let k2 = Key::of(&("a", 1), &[Key(3)]).unwrap();
        assert_ne!(k1, k2, "an upstream key changes the key");
        let v: u32 = steps
            .run("s", k2, |_, _| {
                runs += 1;
                Ok(9)
            })
            .unwrap();
        assert_eq!((v, runs), (9, 2));
        // a failed attempt leaves an attempt marker: the next run with the same key may resume
        let k3 = Key(42);
        let r: Result<u32> = steps.run("t", k3, |d, resume| {
            assert!(!resume);
            std::fs::write(d.join("partial"), b"x").unwrap();
            anyhow::bail!("killed")
        });
        assert!(r.is_err());
        let v: u32 = steps
            .run("t", k3, |d, resume| {
                assert!(resume && d.join("partial").exists());
                Ok(1)
            })
            .unwrap();
        assert_eq!(v, 1);
        // a different key starts clean
        let _: u32 = steps
            .run("t", Key(43), |d, resume| {
                assert!(!resume && !d.join("partial").exists());
                Ok(2)
            })
            .unwrap();
    }
}
