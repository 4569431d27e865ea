//! Who holds a store directory: sled takes an exclusive `flock` on its `db` file, and Linux
//! lists every lock with its holder's pid in /proc/locks. Only used to say which process to
//! stop, so anything unreadable just means "not known".

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The one-line message for a store that another process holds: what happened and what to do.
pub fn in_use_message(dir: &Path, holder: Option<u32>) -> String {
    let pid = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
    format!(
        "the store at {} is locked: it is in use by another reaper process{pid}; stop that \
         process first, or give this one another data directory (--data-dir)",
        dir.display()
    )
}

/// The pid holding the lock on the store in `dir`, if some process holds it and /proc says who.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let meta = std::fs::metadata(dir.join("db")).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, &device_inode(meta.dev(), meta.ino()))
}

/// `MAJOR:MINOR:INODE` as /proc/locks writes it (major and minor in hex).
fn device_inode(dev: u64, ino: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:02x}:{minor:02x}:{ino}")
}

/// The holder of a granted lock on `file` (`MAJOR:MINOR:INODE`); waiters (`->`) are skipped.
fn holder_in(locks: &str, file: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, kind, _, _, pid, f, ..] if *kind != "->" && *f == file => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_the_file_and_skips_waiters() {
        let locks = "1: FLOCK  ADVISORY  WRITE 9601 fe:00:6449453 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 77 fe:00:10264813 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 8937 fe:00:10264813 0 EOF\n";
        assert_eq!(holder_in(locks, "fe:00:10264813"), Some(8937));
        assert_eq!(holder_in(locks, "fe:01:10264813"), None);
        assert_eq!(device_inode(0xfe00, 10264813), "fe:00:10264813");
    }

    #[test]
    fn a_store_held_in_this_process_names_this_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _store = crate::store::SledStore::open(dir.path()).unwrap();
        assert_eq!(lock_holder(dir.path()), Some(std::process::id()));
        let message = in_use_message(dir.path(), Some(1));
        assert!(message.contains("in use by another reaper process (pid 1)"));
    }
}
