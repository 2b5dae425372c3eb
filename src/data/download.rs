//! HTTP downloads into a cache: the body streams to `dest.part` while it is hashed, the digest is
//! checked, and only then is the file renamed to `dest`, so `dest` is either absent or whole.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
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

/// Downloads `url` to `dest`, creating its folder. The body goes to `dest` + ".part" while it is
/// hashed; when the digest matches `checksum` that file is renamed to `dest` (atomic on one file
/// system). On any failure the ".part" file is deleted and `dest` is left untouched. A progress
/// bar (bytes, rate, ETA) is drawn on stderr when it is a terminal.
pub fn download(url: &str, dest: &Path, checksum: &Checksum) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("could not create the folder {}", parent.display()))?;
    }
    let part = part_path(dest);
    let result = fetch_to(url, dest, &part, checksum);
    if result.is_err() {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(&part);
    }
    result
}

/// Checks that a file on disk (for example one put there by hand) hashes to `checksum`.
pub fn verify_file(path: &Path, checksum: &Checksum) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut hasher = checksum.hasher();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("could not read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
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

fn fetch_to(url: &str, dest: &Path, part: &Path, checksum: &Checksum) -> Result<()> {
    // One sentence for every network problem (refused, DNS, timeout, HTTP status, cut short).
    let network = |err: &dyn std::fmt::Display| {
        anyhow!("could not download {url} ({err}); download it by hand and save it as {}", dest.display())
    };

    // No global timeout: the CIFAR archive is 170 MB and links can be slow. A stalled
    // connection still fails through the per-read limit.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| network(&e))?;
    let body = response.into_body();
    let total = body.content_length();
    let mut reader = body.into_reader();

    let bar = progress_bar(total, dest);
    let mut file = File::create(part).with_context(|| format!("could not create {}", part.display()))?;
    let mut hasher = checksum.hasher();
    let mut buf = vec![0u8; 1 << 16];
    let copied = (|| -> Result<()> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| network(&e))?;
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
