use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use genir_data::download::{md5_file, Cache, DownloadOptions, Downloader, RemoteFile};
use genir_data::registry::Registry;
use genir_data::Error;
use md5::{Digest, Md5};

use super::fixture;
use super::server::{Behavior, Request, Server};

fn payload(len: usize) -> Vec<u8> {
    // Deterministic, incompressible-looking bytes.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn options() -> DownloadOptions {
    DownloadOptions {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retries: 2,
        progress_bar: false,
        ..DownloadOptions::default()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn remote(server: &Server, path: &str, body: &[u8]) -> RemoteFile {
    RemoteFile {
        url: server.url(path),
        size: Some(body.len() as u64),
        md5: Some(md5_hex(body)),
        cache_path: format!("test/{path}"),
        headers: vec![("X-Test".into(), "1".into())],
    }
}

#[test]
fn md5_of_known_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("abc");
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    std::fs::write(&p, b"").unwrap();
    assert_eq!(md5_file(&p).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
}

#[test]
fn downloads_verifies_and_caches() {
    let body = payload(300_000);
    let server = Server::start(
        HashMap::from([("f.bin".to_string(), body.clone())]),
        Behavior::Serve,
    );
    let home = tempfile::tempdir().unwrap();
    let last = Arc::new(AtomicU64::new(0));
    let seen = last.clone();
    let opts = DownloadOptions {
        on_progress: Some(Arc::new(move |p| seen.store(p.done, Ordering::SeqCst))),
        ..options()
    };
    let dl = Downloader::new(Cache::new(home.path()), opts);
    let file = remote(&server, "f.bin", &body);
    let path = dl.fetch(&file).unwrap();
    assert_eq!(path, home.path().join("downloads/test/f.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(last.load(Ordering::SeqCst), body.len() as u64);
    assert_eq!(
        files_under(home.path()),
        vec![path.clone()],
        "no .part left"
    );
    assert_eq!(server.requests().len(), 1);

    // A second fetch is served from the cache, with no request.
    drop(server);
    assert_eq!(dl.fetch(&file).unwrap(), path);
}

#[test]
fn dropped_connection_is_resumed_with_a_range_request() {
    let body = payload(200_000);
    let server = Server::start(
        HashMap::from([("big.bin".to_string(), body.clone())]),
        Behavior::DropFirstAfter(70_000),
    );
    let home = tempfile::tempdir().unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());
    let path = dl.fetch(&remote(&server, "big.bin", &body)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].range_start, None);
    // The client may have written fewer bytes than the server sent before the drop, never more.
    let resumed = requests[1].range_start.expect("second request resumes");
    assert!(resumed > 0 && resumed <= 70_000, "resumed at {resumed}");
}

#[test]
fn partial_file_from_an_earlier_run_is_resumed() {
    let body = payload(50_000);
    let server = Server::start(
        HashMap::from([("p.bin".to_string(), body.clone())]),
        Behavior::Serve,
    );
    let home = tempfile::tempdir().unwrap();
    let part = home.path().join("downloads/test/p.bin.part");
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &body[..12_345]).unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());
    let path = dl.fetch(&remote(&server, "p.bin", &body)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.requests(),
        vec![Request {
            path: "p.bin".into(),
            range_start: Some(12_345)
        }]
    );
    assert!(!part.exists());
}

#[test]
fn wrong_checksum_is_an_error_and_leaves_nothing() {
    let body = payload(10_000);
    let server = Server::start(
        HashMap::from([("c.bin".to_string(), body.clone())]),
        Behavior::Serve,
    );
    let home = tempfile::tempdir().unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());
    let mut file = remote(&server, "c.bin", &body);
    file.md5 = Some(md5_hex(b"something else"));
    let err = dl.fetch(&file).unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(
        files_under(home.path()).is_empty(),
        "{:?}",
        files_under(home.path())
    );
}

#[test]
fn not_found_is_an_http_error() {
    let server = Server::start(HashMap::new(), Behavior::Serve);
    let home = tempfile::tempdir().unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());
    let err = dl.fetch(&remote(&server, "missing.bin", b"x")).unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 404, .. }),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
    assert!(files_under(home.path()).is_empty());
}

#[test]
fn slow_server_times_out() {
    let body = payload(1000);
    let server = Server::start(
        HashMap::from([("slow.bin".to_string(), body.clone())]),
        Behavior::Slow(Duration::from_secs(3)),
    );
    let home = tempfile::tempdir().unwrap();
    let opts = DownloadOptions {
        timeout: Duration::from_millis(300),
        retries: 0,
        ..options()
    };
    let dl = Downloader::new(Cache::new(home.path()), opts);
    let started = Instant::now();
    let err = dl.fetch(&remote(&server, "slow.bin", &body)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!home.path().join("downloads/test/slow.bin").exists());
}

/// A file on port 9 (discard) of loopback, never contacted: only offline mode reads it (from the cache).
fn never_fetched(body: &[u8]) -> RemoteFile {
    RemoteFile {
        url: "http://127.0.0.1:9/never".into(),
        size: Some(body.len() as u64),
        md5: Some(md5_hex(body)),
        cache_path: "off/line.txt".into(),
        headers: vec![],
    }
}

#[test]
fn offline_mode_only_reads_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let body = b"cached bytes".to_vec();
    let file = never_fetched(&body);
    let dl = Downloader::new(
        Cache::new(home.path()),
        DownloadOptions {
            offline: true,
            ..options()
        },
    );
    let err = dl.fetch(&file).unwrap_err();
    assert!(matches!(err, Error::NotCached { .. }), "{err}");

    let dest = home.path().join("downloads/off/line.txt");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, &body).unwrap();
    assert_eq!(dl.fetch(&file).unwrap(), dest);

    // A corrupt cached file is detected and not used.
    std::fs::write(&dest, b"cached bytez").unwrap();
    let err = dl.fetch(&file).unwrap_err();
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
}

#[test]
fn corrupt_cached_file_is_downloaded_again_online() {
    let body = payload(4096);
    let server = Server::start(
        HashMap::from([("r.bin".to_string(), body.clone())]),
        Behavior::Serve,
    );
    let home = tempfile::tempdir().unwrap();
    let dest = home.path().join("downloads/test/r.bin");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, payload(4095)).unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());
    let path = dl.fetch(&remote(&server, "r.bin", &body)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(server.requests().len(), 1);
}

fn zip_dir(root: &Path, prefix: &str) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut files = files_under(root);
        files.sort();
        for f in files {
            let rel = f
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            zip.start_file(format!("{prefix}/{rel}"), opts).unwrap();
            zip.write_all(&std::fs::read(&f).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    buf.into_inner()
}

fn tar_gz_dir(root: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for name in ["cran.all.1400", "cran.qry", "cranqrel"] {
        tar.append_path_with_name(root.join(name), name).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn local_registry(server: &Server, zip: &[u8], tgz: &[u8]) -> Registry {
    let json = serde_json::json!({
        "source": "test",
        "files": {
            "scifact": {"url": server.url("scifact.zip"), "size": zip.len(), "md5": md5_hex(zip),
                        "cache_path": "beir/scifact/source.zip"},
            "cran": {"url": server.url("cran.tar.gz"), "size": tgz.len(), "md5": md5_hex(tgz),
                     "cache_path": "cranfield/cran.tar.gz"}
        },
        "datasets": [
            {"name": "local/scifact", "description": "fixture",
             "layout": {"kind": "files",
                "corpus": {"file": "scifact", "member": "scifact/corpus.jsonl", "format": "beir-corpus"},
                "splits": {
                  "train": {"queries": {"file": "scifact", "member": "scifact/queries.jsonl", "format": "beir-queries"},
                            "qrels": {"file": "scifact", "member": "scifact/qrels/train.tsv", "format": "beir-qrels"},
                            "judged_queries_only": true},
                  "test": {"queries": {"file": "scifact", "member": "scifact/queries.jsonl", "format": "beir-queries"},
                           "qrels": {"file": "scifact", "member": "scifact/qrels/test.tsv", "format": "beir-qrels"},
                           "judged_queries_only": true}}}},
            {"name": "local/cranfield", "description": "fixture",
             "layout": {"kind": "files",
                "corpus": {"file": "cran", "member": "cran.all.1400", "format": "cranfield-documents"},
                "splits": {"test": {"queries": {"file": "cran", "member": "cran.qry", "format": "cranfield-queries"},
                                    "qrels": {"file": "cran", "member": "cranqrel", "format": "cranfield-qrels"}}}}}
        ]
    });
    Registry::from_json(&json.to_string()).unwrap()
}

#[test]
fn registry_downloads_extracts_and_loads_archives() {
    let zip = zip_dir(&fixture("beir/scifact"), "scifact");
    let tgz = tar_gz_dir(&fixture("cranfield"));
    let server = Server::start(
        HashMap::from([
            ("scifact.zip".to_string(), zip.clone()),
            ("cran.tar.gz".to_string(), tgz.clone()),
        ]),
        Behavior::Serve,
    );
    let registry = local_registry(&server, &zip, &tgz);
    let home = tempfile::tempdir().unwrap();
    let dl = Downloader::new(Cache::new(home.path()), options());

    let scifact = registry.load("local/scifact", &dl).unwrap();
    assert_eq!(scifact.corpus.len(), 4);
    let train = scifact.split("train").unwrap();
    assert_eq!(train.queries.qids().collect::<Vec<_>>(), ["0", "3"]);
    assert_eq!(train.qrels.len(), 3);
    let test = scifact.split("test").unwrap();
    assert_eq!(test.queries.qids().collect::<Vec<_>>(), ["1", "5"]);
    assert!(scifact.validate().is_clean(), "{}", scifact.validate());

    let streamed: Vec<_> = registry
        .stream_documents("local/scifact", &dl)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(streamed, scifact.corpus.as_slice());

    let cran = registry.load("local/cranfield", &dl).unwrap();
    assert_eq!(cran.corpus.len(), 3);
    let qrels = &cran.split("test").unwrap().qrels;
    // Cranfield grade 2 -> 3, 4 -> 1, 1 -> 4, -1 -> 0.
    assert_eq!(qrels.grade("1", "1"), Some(3));
    assert_eq!(qrels.grade("1", "3"), Some(1));
    assert_eq!(qrels.grade("2", "2"), Some(4));
    assert_eq!(qrels.grade("2", "3"), Some(0));

    // Everything is cached now: an offline downloader loads the same data without the server.
    let requests = server.requests().len();
    assert_eq!(requests, 2, "one request per archive");
    drop(server);
    let offline = Downloader::new(
        Cache::new(home.path()),
        DownloadOptions {
            offline: true,
            ..options()
        },
    );
    assert_eq!(registry.load("local/scifact", &offline).unwrap(), scifact);
    assert!(matches!(
        registry.load("nope", &offline),
        Err(Error::UnknownDataset { .. })
    ));
}

#[test]
fn builtin_registry_lists_the_issue_datasets_with_checksums() {
    let r = Registry::builtin();
    for name in [
        "msmarco-passage/dev/small",
        "msmarco-passage/trec-dl-2019",
        "msmarco-passage/trec-dl-2020",
        "beir/scifact",
        "beir/nfcorpus",
        "cranfield",
        "nq-dsi/nq320k",
        "nq-dsi/nq100k",
        "nq-dsi/nq10k",
    ] {
        let spec = r.get(name).unwrap();
        let files = r.files_of(spec).unwrap();
        assert!(!files.is_empty(), "{name}");
        for f in files {
            assert!(f.url.starts_with("http"), "{name}: {}", f.url);
            let md5 = f.md5.as_deref().unwrap_or_default();
            assert!(
                md5.len() == 32 && md5.chars().all(|c| c.is_ascii_hexdigit()),
                "{name}: {md5}"
            );
        }
    }
    // The facts are ir_datasets' own (shared/ir_datasets-downloads.json).
    let cran = &r.files["cranfield/main"];
    assert_eq!(
        cran.md5.as_deref(),
        Some("1730f7be572d95a5a4b56c59a7b900a5")
    );
    assert_eq!(cran.size, Some(506_960));
    assert_eq!(
        r.files_of(r.get("nq-dsi/nq10k").unwrap()).unwrap().len(),
        55
    );
}

#[test]
fn integrity_errors_say_whether_the_file_was_kept() {
    let home = tempfile::tempdir().unwrap();
    let body = b"cached bytes".to_vec();
    let file = never_fetched(&body);
    let dest = home.path().join("downloads/off/line.txt");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"cached bytez").unwrap();
    let offline = Downloader::new(
        Cache::new(home.path()),
        DownloadOptions {
            offline: true,
            ..options()
        },
    );
    // Offline, a corrupt cached file is left where it is, and the error says so.
    let err = offline.fetch(&file).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::Integrity { kept: Some(p), .. } if p == &dest),
        "{msg}"
    );
    assert!(dest.is_file());
    assert!(
        msg.contains("left at") && !msg.contains("not kept"),
        "{msg}"
    );

    // A download that fails verification is removed, and the error says so.
    let served = payload(100);
    let server = Server::start(
        HashMap::from([("k.bin".to_string(), served.clone())]),
        Behavior::Serve,
    );
    let online = Downloader::new(Cache::new(home.path()), options());
    let mut bad = remote(&server, "k.bin", &served);
    bad.md5 = Some(md5_hex(b"other"));
    let err = online.fetch(&bad).unwrap_err();
    assert!(matches!(err, Error::Integrity { kept: None, .. }), "{err}");
    assert!(err.to_string().contains("not kept"), "{err}");
}
