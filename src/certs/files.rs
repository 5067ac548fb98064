//! Writing certificate material: atomically, with the right permissions,
//! and never over an existing file unless asked to.
//!
//! Each file is written to a temporary file in its final directory, created
//! with its final mode (so a private key is never readable by others, not
//! even for a moment), synced, and then moved into place: with a plain
//! rename when replacing is allowed, or with a link that fails if the name
//! is taken, so that two runs racing for one name cannot both win. Readers
//! thus see either no file or a complete one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Permissions of a private key: readable by its owner only, which is also
/// what PostgreSQL demands of `ssl_key_file`.
pub const KEY_MODE: u32 = 0o600;
/// Permissions of a certificate: public material.
pub const CERT_MODE: u32 = 0o644;

/// Why certificate material could not be written.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The file exists and replacing it was not allowed.
    #[error("{} already exists; pass --force to replace it", path.display())]
    Exists {
        /// The file that is in the way.
        path: PathBuf,
    },
    /// The file system refused.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// One file to write.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// Where it goes.
    pub path: &'a Path,
    /// What it holds (PEM text).
    pub contents: &'a str,
    /// Its Unix permissions, e.g. [`KEY_MODE`].
    pub mode: u32,
}

/// Writes every file in `outputs`, creating their directories as needed.
///
/// Without `force`, every target is checked first, so that a certificate
/// is not written beside an old key (or the reverse) when only one of the
/// two is in the way; the error names the first file that exists.
pub fn write_all(outputs: &[Output<'_>], force: bool) -> Result<(), WriteError> {
    if !force {
        if let Some(taken) = outputs.iter().find(|o| o.path.exists()) {
            return Err(WriteError::Exists {
                path: taken.path.to_owned(),
            });
        }
    }
    for output in outputs {
        write_one(output, force)?;
    }
    Ok(())
}

fn write_one(output: &Output<'_>, force: bool) -> Result<(), WriteError> {
    let path = output.path;
    let io_error = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io_error)?;

    let mut builder = tempfile::Builder::new();
    builder.prefix(".pgsni-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(output.mode));
    }
    let mut temp = builder.tempfile_in(dir).map_err(io_error)?;
    temp.write_all(output.contents.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_error)?;

    let persisted = if force {
        temp.persist(path)
    } else {
        temp.persist_noclobber(path)
    };
    match persisted {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Err(WriteError::Exists {
            path: path.to_owned(),
        }),
        // The temporary file is removed when `e` is dropped.
        Err(e) => Err(io_error(e.error)),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_with_modes_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sub/a.key");
        let cert = dir.path().join("sub/a.pem");
        let outputs = [
            Output {
                path: &key,
                contents: "key 1",
                mode: KEY_MODE,
            },
            Output {
                path: &cert,
                contents: "cert 1",
                mode: CERT_MODE,
            },
        ];
        write_all(&outputs, false).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "cert 1");

        // Only the certificate is in the way: nothing is written at all.
        std::fs::remove_file(&key).unwrap();
        let again = [
            Output {
                contents: "key 2",
                ..outputs[0]
            },
            Output {
                contents: "cert 2",
                ..outputs[1]
            },
        ];
        let error = write_all(&again, false).unwrap_err();
        assert!(matches!(&error, WriteError::Exists { path } if path == &cert));
        assert!(error.to_string().contains("--force"), "{error}");
        assert!(!key.exists());

        write_all(&again, true).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "key 2");
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "cert 2");
        assert_eq!(mode(&key), 0o600);
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            2
        );
    }
}
