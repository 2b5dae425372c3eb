//! Where resnet-wgpu keeps files: the cache folder and its weights, and atomic writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// resnet-wgpu's cache folder: `$RESNET_WGPU_CACHE`, else `<user cache>/resnet-wgpu`
/// (`~/.cache/resnet-wgpu` on Linux).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("RESNET_WGPU_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir().unwrap_or_else(|| PathBuf::from(".cache")).join("resnet-wgpu"),
    }
}

/// The folder of downloaded weights: `cache_dir()/weights`.
pub fn weights_dir() -> PathBuf {
    cache_dir().join("weights")
}

/// Writes `bytes` to a temporary file in `path`'s folder, syncs it, and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}
