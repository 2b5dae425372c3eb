//! HTTP downloads into a cache: the body streams to `dest.part` while it is hashed, the digest is
//! checked, and only then is the file renamed to `dest`, so `dest` is either absent or whole.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use sha2::{Digest, Sha256};

/// What a downloaded (or hand-placed) file must hash to. Digests are lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The whole MD5 digest (32 hex digits), as the CIFAR-10 page publishes it.
    Md5(String),
    /// The SHA-256 digest must start with these hex digits: torchvision weight files carry the
    /// first 8 in their name, `resnet50-0676ba61.pth`.
    Sha256Prefix(String),
}

impl Checksum {
    fn hasher(&self) -> Hasher {
        match self {
            Checksum::Md5(_) => Hasher::Md5(Md5::new()),
            Checksum::Sha256Prefix(_) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn matches(&self, actual: &str) -> bool {
        match self {
            Checksum::Md5(expected) => actual.eq_ignore_ascii_case(expected),
            Checksum::Sha256Prefix(prefix) => {
                !prefix.is_empty()
                    && actual.len() >= prefix.len()
                    && actual[..prefix.len()].eq_ignore_ascii_case(prefix)
            }
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checksum::Md5(hex) => write!(f, "md5 {hex}"),
            Checksum::Sha256Prefix(hex) => write!(f, "sha256 {hex}..."),
        }
    }
}

enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// Lowercase hex of the digest.
    fn finish(self) -> String {
        let digest: Vec<u8> = match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Tries of one download: a connection that breaks off is tried again from where it stopped.
const TRIES: usize = 3;
/// The most one download may take, its tries together: a server that trickles cannot hold a
/// command forever (the CIFAR archive, 170 MB, needs under 10 minutes at 300 KB/s).
pub const DEADLINE: Duration = Duration::from_secs(2 * 3600);

/// Downloads `url` to `dest`, creating its folder. The body goes to `dest` + ".part" while it is
/// hashed; when the digest matches `checksum` that file is renamed to `dest` (atomic on one file
/// system). A connection that breaks off is tried again ([`TRIES`] in all) with an HTTP range
/// request that resumes the ".part" file; on failure that file is deleted and `dest` is left
/// untouched. A progress bar (bytes, rate, ETA) is drawn on stderr when it is a terminal.
pub fn download(url: &str, dest: &Path, checksum: &Checksum) -> Result<()> {
    download_within(url, dest, checksum, DEADLINE)
}

/// [`download`] that gives up once `deadline` has passed, whatever the tries.
pub fn download_within(url: &str, dest: &Path, checksum: &Checksum, deadline: Duration) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("could not create the folder {}", parent.display()))?;
    }
    let part = part_path(dest);
    // A ".part" of an earlier command is of unknown origin: start afresh.
    let _ = fs::remove_file(&part);
    let start = Instant::now();
    let mut tries = 0;
    let result = loop {
        tries += 1;
        let left = deadline.saturating_sub(start.elapsed());
        match fetch_to(url, dest, &part, checksum, left) {
            Err(e) if tries < TRIES && start.elapsed() < deadline && e.downcast_ref::<BrokenOff>().is_some() => {
                eprintln!("{e:#}; trying again from byte {}", fs::metadata(&part).map_or(0, |m| m.len()));
            }
            result => break result,
        }
    };
    if result.is_err() {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(&part);
    }
    result
}

/// A download that stopped on the network's side (refused, timed out, cut short): worth another try.
#[derive(Debug)]
struct BrokenOff(String);

impl std::fmt::Display for BrokenOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokenOff {}

/// Checks that a file on disk (for example one put there by hand) hashes to `checksum`.
pub fn verify_file(path: &Path, checksum: &Checksum) -> Result<()> {
    let mut hasher = checksum.hasher();
    hash_file(path, &mut hasher)?;
    let actual = hasher.finish();
    if !checksum.matches(&actual) {
        bail!(mismatch_message(&path.display().to_string(), checksum, &actual));
    }
    Ok(())
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn mismatch_message(what: &str, checksum: &Checksum, actual: &str) -> String {
    let (algo, expected) = match checksum {
        Checksum::Md5(hex) => ("md5", hex.clone()),
        Checksum::Sha256Prefix(hex) => ("sha256", format!("{hex}...")),
    };
    format!("checksum mismatch for {what}: expected {algo} {expected}, got {actual}")
}

/// One try: appends to `part` where it holds bytes of an earlier try and the server answers the
/// range request (206), else writes it anew; hashes all of it and renames it to `dest`.
fn fetch_to(url: &str, dest: &Path, part: &Path, checksum: &Checksum, left: Duration) -> Result<()> {
    // One sentence for every network problem (refused, DNS, timeout, HTTP status, cut short).
    let broken = |err: &dyn std::fmt::Display| {
        anyhow::Error::new(BrokenOff(format!(
            "could not download {url} ({err}); download it by hand and save it as {}",
            dest.display()
        )))
    };

    // A stalled connection fails through the per-read limit, a trickling one at the deadline.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(left))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let have = fs::metadata(part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| broken(&e))?;
    let resumed = have > 0 && response.status().as_u16() == 206;
    let body = response.into_body();
    let total = body.content_length().map(|len| if resumed { have + len } else { len });
    let mut reader = body.into_reader();

    let mut hasher = checksum.hasher();
    let mut file = if resumed {
        hash_file(part, &mut hasher)?;
        fs::OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .with_context(|| format!("could not write {}", part.display()))?;
    let bar = progress_bar(total, dest);
    bar.set_position(if resumed { have } else { 0 });
    let mut buf = vec![0u8; 1 << 16];
    let copied = (|| -> Result<()> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| broken(&e))?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).with_context(|| format!("could not write {}", part.display()))?;
            bar.inc(n as u64);
        }
    })();
    // Cleared on failure too, so that the error starts a line of its own.
    bar.finish_and_clear();
    copied?;
    file.sync_all().with_context(|| format!("could not write {}", part.display()))?;
    drop(file);

    let actual = hasher.finish();
    if !checksum.matches(&actual) {
        let what = format!("{} downloaded from {url}", dest.display());
        bail!(mismatch_message(&what, checksum, &actual));
    }
    fs::rename(part, dest).with_context(|| format!("could not rename {} to {}", part.display(), dest.display()))?;
    Ok(())
}

/// Feeds the whole of `path` to `hasher`.
fn hash_file(path: &Path, hasher: &mut Hasher) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("could not read {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn progress_bar(total: Option<u64>, dest: &Path) -> ProgressBar {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // indicatif draws to stderr and stays hidden when stderr is not a terminal.
    let (bar, template) = match total {
        Some(len) => (ProgressBar::new(len), "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"),
        None => (ProgressBar::new_spinner(), "{msg} {spinner} {bytes} {bytes_per_sec}"),
    };
    let style = ProgressStyle::with_template(template).expect("the progress template is valid");
    bar.with_style(style).with_message(name)
}
