//! The state directory of one application instance.
//!
//! ```text
//! <state dir>/<application id>/
//!     .lock                      held while an instance uses the directory
//!     <task id>/                 e.g. 0_3: sub-topology 0, partition 3
//!         .checkpoint            changelog offsets of the task's stores
//!         rocksdb/<store>/       one RocksDB database per store
//! ```
//!
//! Only one process may use an application's state directory at a time;
//! a second one gets a clear error instead of corrupting the first's state.

use std::fs;
use std::path::{Path, PathBuf};

use brook_topology::store::{StoreError, StoreResult};

use crate::checkpoint::CHECKPOINT_FILE;

/// An application's state directory, locked for this process.
#[derive(Debug)]
pub struct StateDirectory {
    root: PathBuf,
    _lock: fs::File,
}

fn io_error(operation: &'static str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::new(operation, format!("{}: {e}", path.display()))
}

impl StateDirectory {
    /// Opens (creating it if needed) and locks `<state_dir>/<application_id>`.
    pub fn open(state_dir: &Path, application_id: &str) -> StoreResult<Self> {
        let root = state_dir.join(application_id);
        fs::create_dir_all(&root).map_err(|e| io_error("open state directory", &root, e))?;
        let lock_path = root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("open state directory", &lock_path, e))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => StoreError::new(
                "lock state directory",
                format!(
                    "{} is in use by another instance of {application_id}; give each instance its own state directory",
                    root.display()
                ),
            ),
            fs::TryLockError::Error(e) => io_error("lock state directory", &lock_path, e),
        })?;
        Ok(StateDirectory { root, _lock: lock })
    }

    /// `<state_dir>/<application_id>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A task's directory (created if needed).
    pub fn task_dir(&self, task: &str) -> StoreResult<PathBuf> {
        let dir = self.root.join(task);
        fs::create_dir_all(&dir).map_err(|e| io_error("create task directory", &dir, e))?;
        Ok(dir)
    }

    /// Where a task's checkpoint lives.
    pub fn checkpoint_path(&self, task: &str) -> PathBuf {
        self.root.join(task).join(CHECKPOINT_FILE)
    }

    /// Where a task's store lives.
    pub fn store_path(&self, task: &str, store: &str) -> PathBuf {
        store_path(&self.root, task, store)
    }

    /// The task directories present, by task id.
    pub fn tasks(&self) -> StoreResult<Vec<String>> {
        task_dirs(&self.root)
    }

    /// Deletes a task's local state (stores and checkpoint).
    pub fn wipe_task(&self, task: &str) -> StoreResult<()> {
        remove_dir(&self.root.join(task))
    }

    /// Deletes one store of a task.
    pub fn wipe_store(&self, task: &str, store: &str) -> StoreResult<()> {
        remove_dir(&self.store_path(task, store))
    }
}

/// Where `store` of `task` lives under an application's directory `root`.
pub fn store_path(root: &Path, task: &str, store: &str) -> PathBuf {
    root.join(task).join("rocksdb").join(store)
}

/// The task directories under an application's directory `root`.
pub fn task_dirs(root: &Path) -> StoreResult<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list tasks", root, e)),
    };
    let mut tasks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list tasks", root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            tasks.push(name);
        }
    }
    tasks.sort();
    Ok(tasks)
}

/// The stores present in a task directory.
pub fn store_dirs(task_dir: &Path) -> StoreResult<Vec<String>> {
    let dir = task_dir.join("rocksdb");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list stores", &dir, e)),
    };
    let mut stores = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list stores", &dir, e))?;
        if entry.path().is_dir() {
            stores.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    stores.sort();
    Ok(stores)
}

/// Removes a directory tree; absent is fine.
pub fn remove_dir(dir: &Path) -> StoreResult<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("delete", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_at_a_time_and_tasks_are_listed_and_wiped() -> StoreResult<()> {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDirectory::open(dir.path(), "app")?;
        let err = StateDirectory::open(dir.path(), "app").expect_err("locked");
        assert!(err.message.contains("in use by another instance"), "{err}");
        // Another application may use the same state dir.
        let _other = StateDirectory::open(dir.path(), "other")?;
        state.task_dir("0_1")?;
        fs::create_dir_all(state.store_path("0_0", "counts")).expect("mkdir");
        assert_eq!(state.tasks()?, vec!["0_0".to_string(), "0_1".to_string()]);
        assert_eq!(
            store_dirs(&state.root().join("0_0"))?,
            vec!["counts".to_string()]
        );
        state.wipe_store("0_0", "counts")?;
        assert!(store_dirs(&state.root().join("0_0"))?.is_empty());
        state.wipe_task("0_1")?;
        state.wipe_task("0_1")?;
        assert_eq!(state.tasks()?, vec!["0_0".to_string()]);
        drop(state);
        // Released when dropped (a crashed process releases it too).
        StateDirectory::open(dir.path(), "app")?;
        Ok(())
    }
}
