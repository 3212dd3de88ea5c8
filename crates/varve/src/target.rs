//! The directory a command writes a new store into (`backup`, `import`), and removing what the
//! command wrote there when it fails: a directory it created, or the store files it created in
//! a directory that existed; never anything that was there before.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

/// The files and directories of a store.
const STORE_FILES: [&str; 4] = ["data.mdb", "lock.mdb", "data.mdb.partial", "keys"];

/// What a failed command removes.
enum Undo {
    /// The command creates this directory, the first missing one on the way to the target:
    /// removed whole.
    Created(PathBuf),
    /// The target directory exists: the store files that were not in it.
    Files(Vec<PathBuf>),
}

/// A target directory, prepared before a command writes into it. Dropped without
/// [`Target::keep`], it removes what the command wrote (so declare it before the store opened
/// in it, which is then closed first).
pub struct Target {
    path: PathBuf,
    undo: Undo,
    kept: bool,
}

impl Target {
    /// Takes note of what exists at `path` before anything is written; refuses a path that is
    /// not a directory.
    pub fn prepare(path: &Path) -> CliResult<Target> {
        let undo = match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => return Err(not_a_directory(path)),
            Ok(_) => Undo::Files(
                STORE_FILES
                    .iter()
                    .map(|name| path.join(name))
                    .filter(|p| fs::symlink_metadata(p).is_err())
                    .collect(),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let first_missing = path
                    .ancestors()
                    .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
                    .last()
                    .unwrap_or(path);
                Undo::Created(first_missing.to_owned())
            }
            Err(e) => return Err(CliError::new(path, format!("cannot examine it: {e}"))),
        };
        Ok(Target {
            path: path.to_owned(),
            undo,
            kept: false,
        })
    }

    /// Whether a failure leaves no store behind: the command creates the store, rather than
    /// writing into one that existed.
    pub fn leaves_nothing(&self) -> bool {
        match &self.undo {
            Undo::Created(_) => true,
            Undo::Files(files) => files.iter().any(|f| f.ends_with("data.mdb")),
        }
    }

    /// What a failure removes now, for messages; `None` when the command wrote nothing yet.
    pub fn removal(&self) -> Option<String> {
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        match &self.undo {
            Undo::Created(dir) if !exists(dir) => None,
            Undo::Created(dir) if dir == &self.path => {
                Some(format!("{} was removed", dir.display()))
            }
            Undo::Created(dir) => Some(format!(
                "{} (created for {}) was removed",
                dir.display(),
                self.path.display()
            )),
            Undo::Files(files) if !files.iter().any(|f| exists(f)) => None,
            Undo::Files(_) => Some(format!(
                "the store files written into {} were removed",
                self.path.display()
            )),
        }
    }

    /// Keeps what the command wrote.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let removed = match &self.undo {
            Undo::Created(dir) => remove(dir),
            Undo::Files(files) => files.iter().try_for_each(|f| remove(f)),
        };
        if let Err(e) = removed {
            eprintln!(
                "varve: store {}: removing what the failed command wrote failed: {e}; remove it by hand",
                self.path.display()
            );
        }
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The error for a store path that is a file.
pub fn not_a_directory(path: &Path) -> CliError {
    let mut hint = "give a store's directory (the one holding data.mdb), not a file".to_string();
    if path.file_name().is_some_and(|n| n == "data.mdb") {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            hint = format!("give the directory holding data.mdb: {}", parent.display());
        }
    }
    CliError::new(path, "is a file, not a store directory").hint(hint)
}
