//! The file I/O under [`KeyDir`](super::KeyDir): bounded reads of one open file, owner-only
//! atomic creation, and errors that name the file, never its contents.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::{Error, Result};

/// Longest key or secret file read, in bytes: a PEM of an RSA-4096 key is about 3.3 KB; a
/// larger file is a mistake (a log, a dump), refused before it is read whole.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Reads a key file of at most [`MAX_KEY_FILE_BYTES`].
pub(super) fn read_limited(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read as _;
    // Opened once; the checks are on the open file, so the path cannot change in between.
    let file = fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    // A FIFO or a device (`/dev/zero`) reports no length and never ends: refused.
    if !meta.is_file() {
        return Err(path_error(path, NOT_A_REGULAR_FILE));
    }
    let mut contents = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| io_error(path, &e))?;
    if contents.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(path_error(
            path,
            &format!("larger than {MAX_KEY_FILE_BYTES} bytes; not a key file"),
        ));
    }
    Ok(contents)
}

/// Why a key path that is not a plain file is refused.
pub(super) const NOT_A_REGULAR_FILE: &str =
    "not a regular file (symbolic links, folders and devices are refused)";

/// Refuses `meta` (of the folder `path`) when its group or others may write to it.
pub(super) fn writable_by_others(path: &Path, meta: &fs::Metadata) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(path_error(
                path,
                "group or others may write to this key folder; make it owner-only (chmod 700)",
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

/// Creates `path` with `contents`, readable by its owner only, atomically: written and
/// flushed under a temporary name first, then hard-linked into place (which, unlike a
/// rename, fails when `path` exists: an existing key or secret is never replaced).
pub(super) fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = dir.join(format!(".tenantkit-{nonce}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // Secret material: readable by its owner only.
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    linked?;
    // The new name is durable once the folder is (best effort: not every platform can
    // open a folder for syncing).
    if let Ok(folder) = fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// How old a leftover temporary of [`write_new`] must be before it is removed: a younger one
/// may belong to a process writing right now (removing it would fail that write).
pub(super) const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temporaries of [`write_new`] in `dir` that a process killed between writing and
/// unlinking one left behind (each may hold key material) once they are older than
/// [`STALE_TEMPORARY`]. Best effort: a file that cannot be inspected or removed is left.
pub(super) fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".tenantkit-") && name.ends_with(".tmp")) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= STALE_TEMPORARY));
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

pub(super) fn path_error(path: &Path, why: &str) -> Error {
    Error::Key(format!("{}: {why}", path.display()))
}

pub(super) fn io_error(path: &Path, err: &std::io::Error) -> Error {
    path_error(path, &err.to_string())
}

/// Prefixes a key error with the file it came from. Key errors describe the key's type or
/// format, never its bytes.
pub(super) fn file_error(path: &Path, err: Error) -> Error {
    match err {
        Error::Key(why) => path_error(path, &why),
        other => path_error(path, &other.to_string()),
    }
}
