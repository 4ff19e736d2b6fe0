//! Files that hold secrets (keys, configs): written owner-only (0600) and
//! atomically (temp file, fsync, rename), so a crash never leaves a
//! half-written key behind and nobody else can read one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `contents` to `path`; errors name the file.
pub fn write_private(
    path: &Path,
    contents: &[u8],
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    })();
    res.map_err(|e| (tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_and_replaces_whole() {
        let d = std::env::temp_dir().join(format!("dwa-fs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("key");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!p.with_extension("tmp").exists());
        let e = write_private(&d.join("missing/dir/key"), b"x").unwrap_err();
        assert!(e.0.ends_with("missing/dir/key.tmp"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
