//! Files the server keeps (the SQLite database, generated secrets, the mail sink): readable by
//! its own user only. A directory it creates is `0700`, a file `0600`; a directory that already
//! exists is left as its owner made it.

use std::io::Write as _;
use std::path::Path;

/// Creates `dir` (and its parents) if missing, the new ones private.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `path` empty and private if it does not exist (so whoever fills it later, SQLite for
/// one, inherits the mode); an existing file is left alone.
pub fn touch_private(path: &Path) -> std::io::Result<()> {
    match private_options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path`, replacing what it held; a file it creates is private.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(bytes)
}

/// Writes `bytes` to a new private file at `path`; fails if it exists.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    private_options()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(bytes)
}
