//! Extraction of downloaded archives (`.zip`, `.tar.gz`, `.tgz`, `.tar`) next to them, atomically.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

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

/// Extracts `archive` into `<archive>.d/` (once) and returns that folder.
///
/// Extraction goes to a temporary sibling folder renamed when complete, so an interrupted extraction is
/// never mistaken for a finished one. Member paths escaping the folder are refused by the archive readers.
pub fn extract(archive: &Path) -> Result<PathBuf> {
    let dest = sibling(archive, ".d");
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = sibling(archive, &format!(".d.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    info!(archive = %archive.display(), "extracting");
    let result = unpack(archive, &tmp);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(dest)
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
