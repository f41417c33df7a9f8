//! Extraction of downloaded archives (`.zip`, `.tar.gz`, `.tgz`, `.tar`) next to them, atomically.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tracing::info;

use crate::error::{Error, Result};

/// Whether the file name looks like an archive this module extracts.
pub fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".zip")
        || name.ends_with(".tar.gz")
        || name.ends_with(".tgz")
        || name.ends_with(".tar")
}

/// File inside an extraction folder recording which archive (size and modification time) was extracted there.
const STAMP: &str = ".genir-extracted";

/// Without `/proc`, a temporary extraction folder of another process is taken as abandoned after this long.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Extracts `archive` into `<archive>.d/` (once) and returns that folder.
///
/// Extraction goes to a temporary sibling folder renamed when complete, so an interrupted extraction is
/// never mistaken for a finished one; temporary folders left by interrupted extractions are removed first.
/// The folder records the archive's size and modification time, and is extracted again when the archive
/// changed (e.g. downloaded again). Member paths escaping the folder are refused by the archive readers.
pub fn extract(archive: &Path) -> Result<PathBuf> {
    let dest = sibling(archive, ".d");
    let stamp = stamp(archive)?;
    if is_extracted(&dest, &stamp) {
        return Ok(dest);
    }
    remove_stale_tmp(archive)?;
    let tmp = sibling(archive, &format!(".d.tmp-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    info!(archive = %archive.display(), "extracting");
    let result = unpack(archive, &tmp).and_then(|()| {
        let path = tmp.join(STAMP);
        fs::write(&path, &stamp).map_err(|e| Error::io(&path, e))
    });
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if is_extracted(&dest, &stamp) {
        // another process finished the same extraction meanwhile
        let _ = fs::remove_dir_all(&tmp);
        return Ok(dest);
    }
    if dest.exists() {
        info!(folder = %dest.display(), "replacing the extraction of an older archive");
        fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(dest)
}

/// What [`STAMP`] records of an archive: its size and modification time.
fn stamp(archive: &Path) -> Result<String> {
    let meta = fs::metadata(archive).map_err(|e| Error::io(archive, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(
            || "unknown".to_string(),
            |d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        );
    Ok(format!("size {}\nmtime {mtime}\n", meta.len()))
}

fn is_extracted(dest: &Path, stamp: &str) -> bool {
    dest.is_dir() && fs::read_to_string(dest.join(STAMP)).is_ok_and(|s| s == stamp)
}

/// Removes the `<archive>.d.tmp-<pid>` folders of processes that are gone (this one's too).
fn remove_stale_tmp(archive: &Path) -> Result<()> {
    let Some(name) = archive.file_name() else {
        return Ok(());
    };
    let prefix = format!("{}.d.tmp-", name.to_string_lossy());
    let dir = match archive.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_string_lossy()
            .strip_prefix(&prefix)
            .map(str::to_string)
        else {
            continue;
        };
        let path = entry.path();
        if is_stale(&path, &pid) {
            info!(folder = %path.display(), "removing an interrupted extraction");
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Whether the extraction folder of process `pid` is abandoned: the process is this one or is gone (where
/// `/proc` tells), or the folder has not changed for [`STALE_AFTER`].
fn is_stale(path: &Path, pid: &str) -> bool {
    let proc = Path::new("/proc");
    match pid.parse::<u32>() {
        Ok(p) if p == std::process::id() => true,
        Ok(p) if proc.join("self").exists() => !proc.join(p.to_string()).exists(),
        _ => fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER),
    }
}

fn unpack(archive: &Path, into: &Path) -> Result<()> {
    let name = archive.to_string_lossy().to_lowercase();
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let bad = |e: std::io::Error| Error::io(archive, e);
    if name.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| bad(std::io::Error::other(e)))?;
        zip.extract(into).map_err(|e| bad(std::io::Error::other(e)))
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
        tar::Archive::new(gz).unpack(into).map_err(bad)
    } else if name.ends_with(".tar") {
        tar::Archive::new(BufReader::new(file))
            .unpack(into)
            .map_err(bad)
    } else {
        Err(Error::InvalidArgument(format!(
            "{}: not a .zip, .tar.gz, .tgz or .tar archive",
            archive.display()
        )))
    }
}

/// The path of a member inside an extracted folder, checked to exist.
pub fn member(folder: &Path, member: &str) -> Result<PathBuf> {
    let path = folder.join(member);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingMember {
            archive: folder.to_path_buf(),
            member: member.to_string(),
        })
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
