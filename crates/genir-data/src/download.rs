//! Downloads into a local cache, ir_datasets style: resumable (HTTP `Range`), verified (size and MD5),
//! moved into place atomically, with an offline mode that only reads the cache.
//!
//! A file is written to `<name>.part` next to its final place and renamed only after its size and checksum
//! match, so the cache never holds a partial or corrupt file under its final name. An interrupted transfer
//! leaves the `.part` file, and the next attempt (in this call, up to [`DownloadOptions::retries`] times, or a
//! later call) resumes it with a `Range` request. Cached files are re-verified on use unless
//! [`DownloadOptions::verify_cached`] is off. Two processes downloading the same file at once are not
//! coordinated.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

/// Environment variable naming the cache folder.
pub const GENIR_HOME: &str = "GENIR_HOME";
/// Environment variable that turns on offline mode when set to `1` or `true`.
pub const GENIR_OFFLINE: &str = "GENIR_OFFLINE";

/// One remote file: where it is, what it must look like, and where it goes in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    /// Source URL.
    pub url: String,
    /// Expected size in bytes, when known (checked only when there is no MD5, as ir_datasets' sizes are hints).
    #[serde(default)]
    pub size: Option<u64>,
    /// Expected MD5 (lowercase hex), when known.
    #[serde(default)]
    pub md5: Option<String>,
    /// Path relative to the cache's `downloads/` folder.
    pub cache_path: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// The cache folder: `$GENIR_HOME`, or `<user cache dir>/genir` (e.g. `~/.cache/genir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// `$GENIR_HOME` if set, else `genir/` under the user's cache folder.
    pub fn from_env() -> Result<Self> {
        if let Some(home) = std::env::var_os(GENIR_HOME).filter(|v| !v.is_empty()) {
            return Ok(Cache::new(home));
        }
        dirs::cache_dir()
            .map(|d| Cache::new(d.join("genir")))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "no user cache folder on this system; set {GENIR_HOME}"
                ))
            })
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a remote file lives once downloaded.
    pub fn path_of(&self, file: &RemoteFile) -> PathBuf {
        self.root.join("downloads").join(&file.cache_path)
    }
}

/// Progress of one transfer, as given to [`DownloadOptions::on_progress`].
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The URL being fetched.
    pub url: &'a str,
    /// Bytes on disk so far (resumed bytes included).
    pub done: u64,
    /// Expected total, when known.
    pub total: Option<u64>,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// How downloads behave.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Only read the cache; a missing file is an error.
    pub offline: bool,
    /// Longest wait for the response headers or for any single read of the body.
    pub timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// How many times an interrupted transfer is resumed within one call.
    pub retries: u32,
    /// Draw an `indicatif` progress bar on stderr (hidden when stderr is not a terminal).
    pub progress_bar: bool,
    /// Called after every chunk written.
    pub on_progress: Option<ProgressFn>,
    /// Re-check size and checksum of cached files before using them.
    pub verify_cached: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            offline: false,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            retries: 3,
            progress_bar: true,
            on_progress: None,
            verify_cached: true,
        }
    }
}

impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("offline", &self.offline)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("progress_bar", &self.progress_bar)
            .field("on_progress", &self.on_progress.is_some())
            .field("verify_cached", &self.verify_cached)
            .finish()
    }
}

impl DownloadOptions {
    /// Defaults, with offline mode taken from `$GENIR_OFFLINE` (`1` or `true`).
    pub fn from_env() -> Self {
        let offline = std::env::var(GENIR_OFFLINE)
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false);
        DownloadOptions {
            offline,
            ..DownloadOptions::default()
        }
    }
}

/// Fetches remote files into a [`Cache`].
#[derive(Debug)]
pub struct Downloader {
    cache: Cache,
    options: DownloadOptions,
    client: OnceLock<reqwest::blocking::Client>,
}

enum Failure {
    Retry(Error),
    Fatal(Error),
}

impl Downloader {
    /// A downloader writing into `cache`.
    pub fn new(cache: Cache, options: DownloadOptions) -> Self {
        Downloader {
            cache,
            options,
            client: OnceLock::new(),
        }
    }

    /// The cache from `$GENIR_HOME` and options from `$GENIR_OFFLINE`.
    pub fn from_env() -> Result<Self> {
        Ok(Downloader::new(
            Cache::from_env()?,
            DownloadOptions::from_env(),
        ))
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The options.
    pub fn options(&self) -> &DownloadOptions {
        &self.options
    }

    fn client(&self) -> Result<&reqwest::blocking::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(self.options.timeout)
            .connect_timeout(self.options.connect_timeout)
            .user_agent(concat!("genir-data/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Download {
                url: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Returns the cached path of `file`, downloading and verifying it first if needed.
    pub fn fetch(&self, file: &RemoteFile) -> Result<PathBuf> {
        let dest = self.cache.path_of(file);
        if dest.is_file() {
            if !self.options.verify_cached {
                return Ok(dest);
            }
            match verify(&dest, file) {
                Ok(()) => {
                    debug!(path = %dest.display(), "cache hit");
                    return Ok(dest);
                }
                Err(e) if self.options.offline => return Err(e),
                Err(mut e) => {
                    // the corrupt file is removed next: the message must not say where it is left
                    if let Error::Integrity { kept, .. } = &mut e {
                        *kept = None;
                    }
                    warn!(path = %dest.display(), error = %e, "cached file is corrupt; downloading it again");
                    fs::remove_file(&dest).map_err(|e| Error::io(&dest, e))?;
                }
            }
        }
        if self.options.offline {
            return Err(Error::NotCached {
                path: dest,
                url: file.url.clone(),
            });
        }
        let part = part_path(&dest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        info!(url = %file.url, path = %dest.display(), "downloading");
        let mut attempt = 0;
        loop {
            match self.transfer(file, &part) {
                Ok(()) => break,
                Err(Failure::Retry(e)) if attempt < self.options.retries => {
                    attempt += 1;
                    warn!(url = %file.url, error = %e, attempt, "transfer interrupted; resuming");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                }
                Err(Failure::Retry(e) | Failure::Fatal(e)) => return Err(e),
            }
        }
        if let Err(e) = verify(&part, file) {
            let removed = fs::remove_file(&part).is_ok();
            return Err(match e {
                Error::Integrity {
                    url,
                    expected,
                    actual,
                    kept,
                } => Error::Integrity {
                    url,
                    expected,
                    actual,
                    kept: kept.filter(|_| !removed),
                },
                other => other,
            });
        }
        fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
        info!(path = %dest.display(), "downloaded and verified");
        Ok(dest)
    }

    fn transfer(&self, file: &RemoteFile, part: &Path) -> Result<(), Failure> {
        let url = file.url.as_str();
        let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = file.size {
            if have == size {
                return Ok(());
            }
            if have > size {
                have = 0;
            }
        }
        let client = self.client().map_err(Failure::Fatal)?;
        let mut request = client.get(url);
        for (k, v) in &file.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().map_err(|e| classify(url, &e))?;
        let status = response.status().as_u16();
        let append = match status {
            206 => {
                let start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(have) {
                    warn!(url, "server resumed at the wrong offset; starting over");
                    let _ = fs::remove_file(part);
                    return Err(Failure::Retry(Error::Download {
                        url: url.into(),
                        message: "bad Content-Range on resume".into(),
                    }));
                }
                true
            }
            200 => {
                if have > 0 {
                    debug!(url, "server ignored the Range request; starting over");
                }
                have = 0;
                false
            }
            416 if have > 0 => return Ok(()), // nothing left to send: verification decides
            500..=599 => {
                return Err(Failure::Retry(Error::HttpStatus {
                    url: url.into(),
                    status,
                }))
            }
            _ => {
                return Err(Failure::Fatal(Error::HttpStatus {
                    url: url.into(),
                    status,
                }))
            }
        };
        let remaining = response.content_length();
        let total = file.size.or(remaining.map(|r| r + have));
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .map_err(|e| Failure::Fatal(Error::io(part, e)))?;
        let bar = self.bar(total, have);
        let mut done = have;
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = out.flush();
                    bar.abandon();
                    return Err(Failure::Retry(if is_timeout(&e) {
                        Error::Timeout { url: url.into() }
                    } else {
                        Error::Download {
                            url: url.into(),
                            message: format!("connection lost after {done} bytes: {e}"),
                        }
                    }));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| Failure::Fatal(Error::io(part, e)))?;
            done += n as u64;
            received += n as u64;
            bar.set_position(done);
            if let Some(cb) = &self.options.on_progress {
                cb(Progress { url, done, total });
            }
        }
        out.flush()
            .and_then(|()| out.sync_all())
            .map_err(|e| Failure::Fatal(Error::io(part, e)))?;
        bar.finish_and_clear();
        if let Some(expected) = remaining {
            if received < expected {
                return Err(Failure::Retry(Error::Download {
                    url: url.into(),
                    message: format!("connection closed after {received} of {expected} bytes"),
                }));
            }
        }
        Ok(())
    }

    fn bar(&self, total: Option<u64>, position: u64) -> indicatif::ProgressBar {
        if !self.options.progress_bar {
            return indicatif::ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(position);
        bar
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes")?.trim();
    spec.split('-').next()?.trim().parse().ok()
}

fn classify(url: &str, e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Retry(Error::Timeout { url: url.into() })
    } else {
        Failure::Retry(Error::Download {
            url: url.into(),
            message: e.to_string(),
        })
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The MD5 of a file, as lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a downloaded file: its MD5 when one is expected (the size is then only a hint, as in ir_datasets),
/// otherwise its size when one is expected. It leaves the file in place (the error says where).
pub fn verify(path: &Path, file: &RemoteFile) -> Result<()> {
    let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if let Some(expected) = &file.md5 {
        let actual = md5_file(path)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::Integrity {
                url: file.url.clone(),
                expected: format!("md5 {expected}"),
                actual: format!("md5 {actual} ({len} bytes)"),
                kept: Some(path.to_path_buf()),
            });
        }
    } else if let Some(size) = file.size {
        if len != size {
            return Err(Error::Integrity {
                url: file.url.clone(),
                expected: format!("{size} bytes"),
                actual: format!("{len} bytes"),
                kept: Some(path.to_path_buf()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn part_file_sits_next_to_the_destination() {
        assert_eq!(
            part_path(Path::new("/c/downloads/x/a.tar.gz")),
            Path::new("/c/downloads/x/a.tar.gz.part")
        );
    }
}
