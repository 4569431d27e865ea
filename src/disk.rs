//! Measuring the filesystem that holds a path (Docker's data root): bytes and inodes in use,
//! counted as `df` counts them (what is reserved for root is neither used nor available).

use std::path::Path;

use crate::core::eviction::{DiskUsage, Usage};

/// `statvfs(path)`: an error when the path cannot be seen from here (a remote engine's data
/// root, a missing mount) or the call fails.
pub fn measure(path: &Path) -> Result<DiskUsage, String> {
    let st =
        rustix::fs::statvfs(path).map_err(|e| format!("cannot see {}: {e}", path.display()))?;
    let block = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    let used_blocks = st.f_blocks.saturating_sub(st.f_bfree);
    let used_inodes = st.f_files.saturating_sub(st.f_ffree);
    Ok(DiskUsage {
        bytes: Usage {
            used: used_blocks.saturating_mul(block),
            total: used_blocks
                .saturating_add(st.f_bavail)
                .saturating_mul(block),
        },
        // Some filesystems (btrfs) report no inode counts: then inodes never press.
        inodes: Usage {
            used: used_inodes,
            total: used_inodes.saturating_add(st.f_favail),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_real_filesystem_and_names_a_path_it_cannot_see() {
        let here = measure(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(here.bytes.total > 0 && here.bytes.used <= here.bytes.total);
        assert!((0.0..=1.0).contains(&here.bytes.ratio()));
        let err = measure(Path::new("/nonexistent/docker/root")).unwrap_err();
        assert!(err.contains("cannot see /nonexistent/docker/root"), "{err}");
    }
}
