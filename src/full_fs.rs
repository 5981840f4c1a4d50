//! Test helper: a directory on a tiny tmpfs of its own, which a test fills
//! to the last byte and frees again, to see what a full disk does to the
//! files the proxy writes.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); without it [`FullFs::mount`]
//! says so on stderr and returns `None`, and tests fall back to writing to
//! `/dev/full`. It must never touch anything outside its own directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of each test's tmpfs: a few pages more than the files under test.
const SIZE: &str = "size=256k";

/// A mounted tmpfs, unmounted and removed on drop.
pub struct FullFs {
    dir: PathBuf,
}

impl FullFs {
    /// Mounts a fresh tmpfs; `None` when this process may not mount.
    pub fn mount(name: &str) -> Option<FullFs> {
        let dir = std::env::temp_dir().join(format!(
            "understudy-fullfs-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", SIZE, "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(FullFs { dir }),
            other => {
                eprintln!(
                    "cannot mount a tmpfs ({other:?}); the test falls back (to /dev/full where it can)"
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// A path inside the tmpfs.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Writes a filler file until the filesystem refuses another byte.
    pub fn fill(&self) {
        let mut filler = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = [0u8; 4096];
        loop {
            match filler.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Single bytes top up a partly used last page.
        while filler.write(&[0]).is_ok_and(|n| n == 1) {}
    }

    /// Removes the filler: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for FullFs {
    fn drop(&mut self) {
        // Lazy: a file still open elsewhere must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
