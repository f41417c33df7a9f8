#![doc = include_str!("../README.md")]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file or folder could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct Error {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

impl Error {
    /// An error naming `path`.
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

/// 64-bit FNV-1a of `bytes`, its offset basis XORed with `seed` (`seed` 0: plain FNV-1a; pass a previous
/// hash to chain parts). Stable across platforms and Rust versions, unlike `std`'s `DefaultHasher`: for cache
/// keys, fingerprints saved in files and seeds derived from names.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |w| {
        w.write_all(bytes).map_err(|e| Error::new(path, e))
    })
}

/// Writes a file through `fill` into a temporary file beside `path`, syncs it to disk, then renames it over
/// `path`, so that a reader never sees a half-written file and a crash leaves either the old file or the new one.
///
/// Parent folders are created. The temporary file's name is unique per process and per call (threads writing
/// the same path do not share one) and it is removed when `fill`, the sync or the rename fails. A symbolic link
/// at `path` is replaced by the file, not written through.
pub fn write_atomic_with<E: From<Error>>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), E> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        std::fs::create_dir_all(dir).map_err(|e| Error::new(dir, e))?;
    }
    let name = path.file_name().ok_or_else(|| {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path");
        Error::new(path, e)
    })?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}-{n}.tmp", std::process::id()));
    let tmp = parent.map_or_else(|| PathBuf::from(&tmp_name), |d| d.join(&tmp_name));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::new(&tmp, e))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Error::new(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::new(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::new(path, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(leftovers(path.parent().unwrap()).is_empty());
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file_and_removes_the_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        write_atomic(&path, b"old").unwrap();
        let r: Result<(), Error> = write_atomic_with(&path, |w| {
            w.write_all(b"half").unwrap();
            Err(Error::new(&path, std::io::Error::other("stopped")))
        });
        assert!(r.unwrap_err().to_string().contains("c.txt: stopped"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b"", 0), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", 0), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar", 0), 0x8594_4171_f739_67e8);
        // chaining parts differs from hashing their concatenation only through the seed's XOR
        assert_ne!(fnv1a(b"bar", fnv1a(b"foo", 0)), fnv1a(b"foobar", 0));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // a folder where the file should go: the rename fails and names the target
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let e = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(e.path, path);
        assert!(leftovers(dir.path()).is_empty());
        // a file where a parent folder should go
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = write_atomic(&file.join("below.txt"), b"x").unwrap_err();
        assert_eq!(e.path, file);
        // no file name
        let e = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(e.to_string().contains("not a file path"), "{e}");
    }

    #[test]
    fn threads_writing_one_path_do_not_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.bin");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, &[t; 4096]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|&b| b == bytes[0]), "a torn write");
        assert!(leftovers(dir.path()).is_empty());
    }
}
