use std::path::Path;
use std::time::{Duration, SystemTime};

use genir_data::archive;

fn write_tar(path: &Path, member: &str, body: &[u8]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, member, body).unwrap();
    tar.into_inner().unwrap();
}

#[test]
fn a_changed_archive_is_extracted_again() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("data.tar");
    write_tar(&tar, "a.txt", b"old");
    let folder = archive::extract(&tar).unwrap();
    assert_eq!(folder, dir.path().join("data.tar.d"));
    let member = archive::member(&folder, "a.txt").unwrap();
    assert_eq!(std::fs::read(&member).unwrap(), b"old");
    // Unchanged: the extraction is reused.
    std::fs::write(&member, b"kept").unwrap();
    assert_eq!(archive::extract(&tar).unwrap(), folder);
    assert_eq!(std::fs::read(&member).unwrap(), b"kept");

    // Downloaded again with other contents (here another size): extracted again.
    write_tar(&tar, "a.txt", b"new contents");
    let folder = archive::extract(&tar).unwrap();
    let member = archive::member(&folder, "a.txt").unwrap();
    assert_eq!(std::fs::read(&member).unwrap(), b"new contents");
}

#[test]
fn interrupted_extractions_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("data.tar");
    write_tar(&tar, "a.txt", b"x");
    // Left by a process that is gone (no process has this id), a day and more ago.
    let stale = dir.path().join("data.tar.d.tmp-4294967");
    std::fs::create_dir_all(stale.join("half")).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    if let Ok(f) = std::fs::File::open(&stale) {
        let _ = f.set_modified(old);
    }
    // Not ours: another archive's.
    let other = dir.path().join("other.tar.d.tmp-4294967");
    std::fs::create_dir_all(&other).unwrap();

    archive::extract(&tar).unwrap();
    assert!(!stale.exists());
    assert!(other.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".d.tmp-"))
        .collect();
    assert_eq!(left, ["other.tar.d.tmp-4294967"]);
}
