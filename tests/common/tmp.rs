//! Temporary directories for the tests, removed when dropped.

use std::ops::Deref;
use std::path::Path;

/// A fresh, empty directory under the system's temporary directory, named
/// `vmsnap-<prefix>-<name>-<random>`, removed with everything in it when
/// dropped (also when the test fails). Derefs to its [`Path`].
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Removes the directory now, with everything in it, and says whether
    /// that worked (dropping it removes it too, silently).
    pub fn close(self) -> std::io::Result<()> {
        self.0.close()
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// A new [`TempDir`] for one test: `prefix` names the test file, `name` the
/// test.
pub fn temp_dir(prefix: &str, name: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("vmsnap-{prefix}-{name}-"))
        .tempdir()
        .expect("creating a temporary directory");
    TempDir(dir)
}
