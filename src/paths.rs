//! Over 500 lines: a descent by file descriptor that no symlink can redirect is long to write safely; the rest is its race and refusal tests.
//!
//! Symlink-safe removal of temporary build directories below the configured paths root.
//!
//! Records name directories (`spec.paths`, `buildDir`) relative to the root. The build that
//! filled such a directory may be hostile and may swap any directory in it for a symlink at any
//! moment, so no path below the root is ever handed to the kernel as a string to resolve:
//! - the root is opened once as a directory handle (it is admin-configured, so it may be a
//!   symlink itself);
//! - every component below it is opened relative to its parent's handle with
//!   `O_DIRECTORY | O_NOFOLLOW`;
//! - entries are removed with `unlinkat` on the handle of the directory that holds them.
//!
//! A symlink met on the way to the target is refused; a symlink met as the target or inside it
//! is unlinked as a link. Nothing is ever followed. "Canonicalize, then delete by path" is the
//! `remove_dir_all` race, CVE-2022-21658, and is never done here.
//!
//! The functions block; async callers run them in `tokio::task::spawn_blocking`.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::core::model::RelPath;

/// How a directory below the root is opened: never through a symlink, never as a non-directory,
/// never blocking on a FIFO, never leaked into a child process.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK);

/// How often one entry is tried again when it changes type under us (directory <-> link).
const ATTEMPTS: u32 = 8;

/// How often one removal lists a directory again because it was refilled or swapped after it
/// was emptied. Bounds the work a build that keeps writing can make us do.
const MAX_RESCANS: u32 = 64;

/// Directory handles one removal holds at once. Deeper trees are re-opened by name from the
/// target, with the same no-follow rules, so a deep tree cannot exhaust file descriptors.
const MAX_OPEN: usize = 16;

/// Nesting depth below the target at which a removal gives up, so a pathological tree costs
/// bounded memory and time.
const MAX_DEPTH: usize = 4096;

/// Why a path below the root could not be checked or removed. Every variant names the
/// root-relative path it is about.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The root exists but cannot be opened as a directory: a configuration or permission fault.
    #[error("cannot open paths root {}: {source}", .root.display())]
    Root {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Going on would mean following a symlink, or treating a non-directory as a directory.
    #[error("refusing to go through {path:?}: it is a symlink or not a directory")]
    NotADirectory { path: String },
    /// Going on would mean deleting inside another mounted filesystem.
    #[error("refusing to enter {path:?}: it is on another filesystem")]
    OtherFilesystem { path: String },
    /// The tree is nested deeper than a removal will go.
    #[error("refusing to descend below {path:?}: nested more than {MAX_DEPTH} directories deep")]
    TooDeep { path: String },
    /// Entries kept changing type or reappearing while they were removed; try again later.
    #[error("{path:?} kept changing while it was being removed")]
    Unstable { path: String },
    /// A system call failed.
    #[error("cannot {op} {path:?}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PathError {
    /// True when reaper declined for safety: retrying cannot help until someone changes the tree
    /// or the configuration, so callers should raise a condition rather than spin.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PathError::NotADirectory { .. }
                | PathError::OtherFilesystem { .. }
                | PathError::TooDeep { .. }
        )
    }

    /// True when the failure may pass on its own (a concurrent writer), so a retry with backoff
    /// is the right answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, PathError::Unstable { .. })
    }

    /// A bounded label for metrics: never a path or raw error text.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PathError::Root { .. } => "root",
            PathError::NotADirectory { .. }
            | PathError::OtherFilesystem { .. }
            | PathError::TooDeep { .. } => "refused",
            PathError::Unstable { .. } => "unstable",
            PathError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                "permission"
            }
            PathError::Io { .. } => "io",
        }
    }
}

/// What `remove_below` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Something was there and is gone now.
    Removed,
    /// Nothing was there (or the root itself is missing): success, nothing to count.
    AlreadyGone,
}

/// Removes `rel` below `root`: a file or symlink is unlinked (never its target), a directory is
/// emptied through directory handles and then removed.
///
/// Refuses (`PathError::NotADirectory`) when a component on the way is a symlink or not a
/// directory. A missing root or a missing path is `Removal::AlreadyGone`.
pub fn remove_below(root: &Path, rel: &RelPath) -> Result<Removal, PathError> {
    let Some((parent, name)) = open_parent(root, rel)? else {
        return Ok(Removal::AlreadyGone);
    };
    let name = c_name(name, rel.as_str())?;
    remove_entry(parent.as_fd(), &name, rel.as_str())
}

/// Whether anything (of any type, a dangling symlink included) exists at `rel` below `root`,
/// with `lstat` semantics and no symlink followed on the way. A missing root means `false`; a
/// symlink on the way is refused, as `remove_below` would refuse it.
pub fn exists_below(root: &Path, rel: &RelPath) -> Result<bool, PathError> {
    let Some((parent, name)) = open_parent(root, rel)? else {
        return Ok(false);
    };
    match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(io_error(rel.as_str(), "stat", e)),
    }
}

/// Opens the root, then each component of `rel` but the last without following symlinks.
/// Returns the last component's parent handle and its name, or `None` when something on the
/// way (the root included) does not exist.
fn open_parent<'r>(root: &Path, rel: &'r RelPath) -> Result<Option<(OwnedFd, &'r str)>, PathError> {
    let root_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = match rustix::fs::open(root, root_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(PathError::Root {
                root: root.to_owned(),
                source: e.into(),
            })
        }
    };
    let rel = rel.as_str();
    let (parents, name) = match rel.rsplit_once('/') {
        Some((parents, name)) => (parents, name),
        None => return Ok(Some((dir, rel))),
    };
    let mut walked = 0;
    for component in parents.split('/') {
        walked += if walked == 0 { 0 } else { 1 } + component.len();
        match rustix::fs::openat(&dir, component, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => dir = fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(PathError::NotADirectory {
                    path: rel[..walked].to_owned(),
                })
            }
            Err(e) => return Err(io_error(&rel[..walked], "open", e)),
        }
    }
    Ok(Some((dir, name)))
}

/// Removes the target `name` in `parent`, whatever its type.
fn remove_entry(parent: BorrowedFd<'_>, name: &CStr, rel: &str) -> Result<Removal, PathError> {
    let parent_dev = rustix::fs::fstat(parent)
        .map_err(|e| io_error(rel, "stat the parent of", e))?
        .st_dev;
    for _ in 0..ATTEMPTS {
        match unlink_or_open(parent, name, true).map_err(|f| f.at(rel.to_owned()))? {
            Found::Unlinked => return Ok(Removal::Removed),
            Found::Missing => return Ok(Removal::AlreadyGone),
            Found::Dir(fd) => {
                empty_dir(fd, parent_dev, rel)?;
                match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                    // NOENT: someone else removed it after we emptied it; it is gone either way.
                    Ok(()) | Err(Errno::NOENT) => return Ok(Removal::Removed),
                    // Swapped for a symlink or another directory, or refilled: look again.
                    Err(Errno::NOTDIR | Errno::NOTEMPTY | Errno::EXIST) => {}
                    Err(e) => return Err(io_error(rel, "remove directory", e)),
                }
            }
        }
    }
    Err(PathError::Unstable {
        path: rel.to_owned(),
    })
}

/// What one look at an entry found.
enum Found {
    /// It was not a directory, and we unlinked it.
    Unlinked,
    /// It was not there (any more).
    Missing,
    /// It is a directory, opened without following a symlink.
    Dir(OwnedFd),
}

/// Why looking at an entry failed, before its full path is known for the message.
enum Fail {
    Io(&'static str, Errno),
    Unstable,
}

impl Fail {
    fn at(self, path: String) -> PathError {
        match self {
            Fail::Io(op, e) => io_error_owned(path, op, e),
            Fail::Unstable => PathError::Unstable { path },
        }
    }
}

/// Unlinks `name` in `parent` if it is not a directory, or opens it if it is. `O_NOFOLLOW`
/// means a symlink is never opened, only unlinked; an entry that changes type between the two
/// calls is looked at again, a bounded number of times.
fn unlink_or_open(parent: BorrowedFd<'_>, name: &CStr, mut as_dir: bool) -> Result<Found, Fail> {
    for _ in 0..ATTEMPTS {
        if as_dir {
            match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => return Ok(Found::Dir(fd)),
                Err(Errno::NOENT) => return Ok(Found::Missing),
                Err(Errno::LOOP | Errno::NOTDIR) => as_dir = false,
                Err(e) => return Err(Fail::Io("open", e)),
            }
        } else {
            match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => return Ok(Found::Unlinked),
                Err(Errno::NOENT) => return Ok(Found::Missing),
                // Linux answers EISDIR for unlink(2) of a directory.
                Err(Errno::ISDIR) => as_dir = true,
                Err(e) => return Err(Fail::Io("unlink", e)),
            }
        }
    }
    Err(Fail::Unstable)
}

/// Removes everything inside the directory open as `fd` (the target, at `rel`), which must be
/// on the filesystem `dev` of its parent: a mount point is never emptied.
fn empty_dir(fd: OwnedFd, dev: u64, rel: &str) -> Result<(), PathError> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(rel, "stat", e))?;
    if stat.st_dev != dev {
        return Err(PathError::OtherFilesystem {
            path: rel.to_owned(),
        });
    }
    let dir = Dir::new(fd).map_err(|e| io_error(rel, "read", e))?;
    let mut emptier = Emptier {
        rel,
        dev: stat.st_dev,
        frames: vec![Frame {
            name: CString::default(),
            dir: Some(dir),
            ino: stat.st_ino,
            made_writable: false,
        }],
        low: 1,
        rescans: 0,
    };
    emptier.run()
}

/// One directory on the way down from the target to where the removal currently is.
struct Frame {
    /// Its name in the parent frame's directory (unused for the target itself).
    name: CString,
    /// Open for the target and the deepest frames; `None` when closed to save descriptors.
    dir: Option<Dir>,
    /// Its inode, to check that a re-opened directory is the one we left.
    ino: u64,
    /// Whether we already gave ourselves write permission on it (read-only build dirs).
    made_writable: bool,
}

/// An explicit stack instead of recursion, so depth costs neither native stack nor unbounded
/// descriptors.
struct Emptier<'a> {
    rel: &'a str,
    /// The target's filesystem: the removal never enters another mount.
    dev: u64,
    frames: Vec<Frame>,
    /// Frames `1..low` are closed; frame 0 and frames `low..` are open.
    low: usize,
    rescans: u32,
}

impl Emptier<'_> {
    fn run(&mut self) -> Result<(), PathError> {
        loop {
            let top = self.frames.len() - 1;
            match self.next_entry(top)? {
                Some((name, file_type)) => self.remove_child(top, name, file_type)?,
                None if top == 0 => return Ok(()),
                None => self.remove_emptied(top)?,
            }
        }
    }

    /// The next entry of the top frame's directory, skipping `.` and `..`.
    fn next_entry(&mut self, top: usize) -> Result<Option<(CString, FileType)>, PathError> {
        let result = {
            let dir = self.dir(top)?;
            loop {
                match dir.read() {
                    None => break Ok(None),
                    // The directory itself was removed under us: nothing more to list.
                    Some(Err(Errno::NOENT)) => break Ok(None),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(entry)) => {
                        let name = entry.file_name();
                        if matches!(name.to_bytes(), b"." | b"..") {
                            continue;
                        }
                        break Ok(Some((name.to_owned(), entry.file_type())));
                    }
                }
            }
        };
        result.map_err(|e| io_error_owned(self.path(top, None), "read", e))
    }

    fn remove_child(&mut self, top: usize, name: CString, ty: FileType) -> Result<(), PathError> {
        let as_dir = matches!(ty, FileType::Directory | FileType::Unknown);
        let found = unlink_or_open(self.fd(top)?, &name, as_dir);
        match found {
            Ok(Found::Unlinked | Found::Missing) => Ok(()),
            Ok(Found::Dir(fd)) => self.push(name, fd),
            Err(Fail::Io(_, Errno::ACCESS | Errno::PERM)) if !self.frames[top].made_writable => {
                self.make_writable(top)
            }
            Err(fail) => Err(fail.at(self.path(top, Some(&name)))),
        }
    }

    /// The top frame is empty: close it and remove it from its parent.
    fn remove_emptied(&mut self, top: usize) -> Result<(), PathError> {
        let Some(done) = self.frames.pop() else {
            return Ok(());
        };
        drop(done.dir);
        self.low = self.low.min(self.frames.len());
        let parent = top - 1;
        let removed = rustix::fs::unlinkat(self.fd(parent)?, &done.name, AtFlags::REMOVEDIR);
        match removed {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            // Refilled, or swapped for a symlink or another directory after we emptied it:
            // list the parent again and treat the entry afresh.
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {
                self.rescans += 1;
                if self.rescans > MAX_RESCANS {
                    return Err(PathError::Unstable {
                        path: self.path(parent, Some(&done.name)),
                    });
                }
                self.dir(parent)?.rewind();
                Ok(())
            }
            Err(Errno::ACCESS | Errno::PERM) if !self.frames[parent].made_writable => {
                self.make_writable(parent)
            }
            Err(e) => Err(io_error_owned(
                self.path(parent, Some(&done.name)),
                "remove directory",
                e,
            )),
        }
    }

    /// Descends into a child directory, on the same filesystem only.
    fn push(&mut self, name: CString, fd: OwnedFd) -> Result<(), PathError> {
        let top = self.frames.len() - 1;
        if top + 1 > MAX_DEPTH {
            return Err(PathError::TooDeep {
                path: self.path(top, None),
            });
        }
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| io_error_owned(self.path(top, Some(&name)), "stat", e))?;
        if stat.st_dev != self.dev {
            return Err(PathError::OtherFilesystem {
                path: self.path(top, Some(&name)),
            });
        }
        let dir =
            Dir::new(fd).map_err(|e| io_error_owned(self.path(top, Some(&name)), "read", e))?;
        self.frames.push(Frame {
            name,
            dir: Some(dir),
            ino: stat.st_ino,
            made_writable: false,
        });
        self.close_excess();
        Ok(())
    }

    /// Keeps at most `MAX_OPEN` handles: the target's and the deepest ones.
    fn close_excess(&mut self) {
        while self.frames.len() - self.low + 1 > MAX_OPEN {
            if let Some(frame) = self.frames.get_mut(self.low) {
                frame.dir = None;
            }
            self.low += 1;
        }
    }

    /// The top frame's open directory, re-opened by name from the target if it was closed.
    fn dir(&mut self, top: usize) -> Result<&mut Dir, PathError> {
        if top >= self.low || top == 0 {
            // Open by the invariant.
        } else {
            self.reopen(top)?;
        }
        let rel = self.rel;
        match self.frames.get_mut(top).and_then(|f| f.dir.as_mut()) {
            Some(dir) => Ok(dir),
            None => Err(PathError::Unstable {
                path: rel.to_owned(),
            }),
        }
    }

    fn fd(&mut self, top: usize) -> Result<BorrowedFd<'_>, PathError> {
        let rel = self.rel;
        self.dir(top)?.fd().map_err(|e| io_error(rel, "read", e))
    }

    /// Re-opens frames `1..=top` (all closed when the top is) from the target's handle, each
    /// with `O_NOFOLLOW` and checked to be the same directory as before.
    fn reopen(&mut self, top: usize) -> Result<(), PathError> {
        for i in 1..=top {
            let (before, rest) = self.frames.split_at_mut(i);
            let (parent, frame) = match (before.last(), rest.first_mut()) {
                (Some(parent), Some(frame)) => (parent, frame),
                _ => break,
            };
            if frame.dir.is_some() {
                continue;
            }
            let reopened = parent
                .dir
                .as_ref()
                .and_then(|dir| dir.fd().ok())
                .and_then(|fd| rustix::fs::openat(fd, &frame.name, DIR_FLAGS, Mode::empty()).ok())
                .and_then(|fd| Some((rustix::fs::fstat(&fd).ok()?, fd)))
                .filter(|(stat, _)| stat.st_ino == frame.ino && stat.st_dev == self.dev)
                .and_then(|(_, fd)| Dir::new(fd).ok());
            match reopened {
                Some(dir) => frame.dir = Some(dir),
                // It moved, vanished or was replaced while we were deeper down.
                None => {
                    return Err(PathError::Unstable {
                        path: self.path(i, None),
                    })
                }
            }
            // Close the parent once it falls out of the window of the deepest handles.
            if i > 1 && top + 2 - i >= MAX_OPEN {
                if let Some(parent) = before.last_mut() {
                    parent.dir = None;
                }
            }
        }
        self.low = (top + 2).saturating_sub(MAX_OPEN).max(1);
        Ok(())
    }

    /// Gives us write and search permission on a frame's directory (build tools such as the Go
    /// module cache leave read-only directories), through its handle, then lists it again.
    fn make_writable(&mut self, top: usize) -> Result<(), PathError> {
        let changed = rustix::fs::fchmod(self.fd(top)?, Mode::RWXU);
        changed.map_err(|e| io_error_owned(self.path(top, None), "change permissions of", e))?;
        self.frames[top].made_writable = true;
        self.dir(top)?.rewind();
        Ok(())
    }

    /// The root-relative path of frame `depth`, or of `name` inside it, for messages.
    fn path(&self, depth: usize, name: Option<&CStr>) -> String {
        let mut path = self.rel.to_owned();
        let names = self
            .frames
            .iter()
            .take(depth + 1)
            .skip(1)
            .map(|f| f.name.as_c_str());
        for part in names.chain(name) {
            path.push('/');
            path.push_str(&part.to_string_lossy());
        }
        path
    }
}

fn c_name(name: &str, rel: &str) -> Result<CString, PathError> {
    // RelPath forbids NUL, so this only guards the invariant.
    CString::new(name).map_err(|_| io_error(rel, "encode", Errno::INVAL))
}

fn io_error(path: &str, op: &'static str, e: Errno) -> PathError {
    io_error_owned(path.to_owned(), op, e)
}

fn io_error_owned(path: String, op: &'static str, e: Errno) -> PathError {
    PathError::Io {
        path,
        op,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A root and an outside directory that holds things the removal must never touch.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir_all(outside.join("b/deep")).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        fs::write(outside.join("b/precious"), "keep").unwrap();
        fs::write(outside.join("b/deep/precious"), "keep").unwrap();
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    impl Fixture {
        fn assert_outside_intact(&self) {
            for f in ["precious", "b/precious", "b/deep/precious"] {
                let p = self.outside.join(f);
                assert_eq!(fs::read_to_string(&p).unwrap(), "keep", "{}", p.display());
            }
        }
    }

    #[test]
    fn removes_a_nested_tree_and_leaves_the_root() {
        let fx = fixture();
        let build = fx.root.join("agents/my-agent");
        fs::create_dir_all(build.join("src/a/b/c")).unwrap();
        fs::create_dir_all(build.join("empty/also-empty")).unwrap();
        fs::write(build.join("Dockerfile"), "FROM scratch").unwrap();
        fs::write(build.join("src/a/b/c/main.rs"), "fn main() {}").unwrap();
        fs::write(build.join("src/a/x"), "x").unwrap();
        fs::write(fx.root.join("agents/neighbour"), "stays").unwrap();

        let r = rel("agents/my-agent");
        assert!(exists_below(&fx.root, &r).unwrap());
        assert_eq!(remove_below(&fx.root, &r).unwrap(), Removal::Removed);
        assert!(!exists_below(&fx.root, &r).unwrap());
        assert!(!build.exists());
        assert!(fx.root.join("agents/neighbour").exists(), "siblings stay");
        assert_eq!(remove_below(&fx.root, &r).unwrap(), Removal::AlreadyGone);
    }

    #[test]
    fn symlinks_inside_the_tree_are_unlinked_and_their_targets_stay() {
        let fx = fixture();
        let build = fx.root.join("build");
        fs::create_dir_all(build.join("sub")).unwrap();
        symlink(fx.outside.join("b"), build.join("to-dir")).unwrap();
        symlink(fx.outside.join("precious"), build.join("sub/to-file")).unwrap();
        symlink(fx.outside.join("nowhere"), build.join("dangling")).unwrap();
        symlink("/", build.join("sub/to-slash")).unwrap();

        assert_eq!(
            remove_below(&fx.root, &rel("build")).unwrap(),
            Removal::Removed
        );
        assert!(!build.exists());
        fx.assert_outside_intact();
    }

    #[test]
    fn the_target_itself_may_be_a_file_or_a_symlink() {
        let fx = fixture();
        fs::write(fx.root.join("file"), "x").unwrap();
        symlink(fx.outside.join("b"), fx.root.join("link-to-dir")).unwrap();
        symlink(fx.outside.join("gone"), fx.root.join("dangling")).unwrap();

        for name in ["file", "link-to-dir", "dangling"] {
            assert!(exists_below(&fx.root, &rel(name)).unwrap(), "{name}");
            assert_eq!(
                remove_below(&fx.root, &rel(name)).unwrap(),
                Removal::Removed
            );
            assert!(fx.root.join(name).symlink_metadata().is_err(), "{name}");
        }
        fx.assert_outside_intact();
    }

    #[test]
    fn refuses_a_symlink_on_the_way_and_leaves_its_target() {
        let fx = fixture();
        symlink(&fx.outside, fx.root.join("a")).unwrap();

        let err = remove_below(&fx.root, &rel("a/b")).unwrap_err();
        assert!(
            matches!(&err, PathError::NotADirectory { path } if path == "a"),
            "{err}"
        );
        assert!(err.is_refusal());
        assert_eq!(err.metric_label(), "refused");
        assert!(err.to_string().contains("\"a\""), "{err}");
        let err = exists_below(&fx.root, &rel("a/b/deep")).unwrap_err();
        assert!(
            matches!(&err, PathError::NotADirectory { path } if path == "a"),
            "{err}"
        );
        fx.assert_outside_intact();

        // Deeper: only the component that is a link is named.
        fs::create_dir_all(fx.root.join("x/y")).unwrap();
        symlink(&fx.outside, fx.root.join("x/y/z")).unwrap();
        let err = remove_below(&fx.root, &rel("x/y/z/b")).unwrap_err();
        assert!(
            matches!(&err, PathError::NotADirectory { path } if path == "x/y/z"),
            "{err}"
        );
        fx.assert_outside_intact();
    }

    #[test]
    fn refuses_a_file_on_the_way() {
        let fx = fixture();
        fs::write(fx.root.join("f"), "x").unwrap();
        let err = remove_below(&fx.root, &rel("f/x")).unwrap_err();
        assert!(
            matches!(&err, PathError::NotADirectory { path } if path == "f"),
            "{err}"
        );
        assert!(fx.root.join("f").exists());
    }

    #[test]
    fn missing_paths_and_a_missing_root_are_already_gone() {
        let fx = fixture();
        assert_eq!(
            remove_below(&fx.root, &rel("nope")).unwrap(),
            Removal::AlreadyGone
        );
        assert_eq!(
            remove_below(&fx.root, &rel("no/such/dir")).unwrap(),
            Removal::AlreadyGone
        );
        assert!(!exists_below(&fx.root, &rel("no/such/dir")).unwrap());

        let missing_root = fx.root.join("not-created");
        assert_eq!(
            remove_below(&missing_root, &rel("x")).unwrap(),
            Removal::AlreadyGone
        );
        assert!(!exists_below(&missing_root, &rel("x")).unwrap());
    }

    #[test]
    fn a_root_that_is_not_a_directory_is_an_error() {
        let fx = fixture();
        let file_root = fx.root.join("file");
        fs::write(&file_root, "x").unwrap();
        let err = remove_below(&file_root, &rel("x")).unwrap_err();
        assert!(matches!(err, PathError::Root { .. }), "{err}");
        assert_eq!(err.metric_label(), "root");
    }

    #[test]
    fn the_root_may_be_reached_through_an_admin_symlink() {
        let fx = fixture();
        let link_root = fx.root.with_file_name("root-link");
        symlink(&fx.root, &link_root).unwrap();
        fs::create_dir_all(fx.root.join("d/e")).unwrap();
        assert_eq!(
            remove_below(&link_root, &rel("d")).unwrap(),
            Removal::Removed
        );
        assert!(!fx.root.join("d").exists());
        assert!(fx.root.is_dir());
    }

    #[test]
    fn read_only_directories_and_files_are_removed() {
        let fx = fixture();
        let build = fx.root.join("gomod");
        fs::create_dir_all(build.join("pkg/mod/sub")).unwrap();
        fs::write(build.join("pkg/mod/sub/file.go"), "package x").unwrap();
        fs::write(build.join("pkg/mod/ro-file"), "x").unwrap();
        let ro = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        ro(&build.join("pkg/mod/ro-file"), 0o444);
        ro(&build.join("pkg/mod/sub"), 0o555);
        ro(&build.join("pkg/mod"), 0o555);
        ro(&build, 0o555);

        assert_eq!(
            remove_below(&fx.root, &rel("gomod")).unwrap(),
            Removal::Removed
        );
        assert!(!build.exists());
    }

    #[test]
    fn special_files_are_unlinked_without_blocking() {
        let fx = fixture();
        let build = fx.root.join("build");
        fs::create_dir(&build).unwrap();
        let mode = Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, build.join("fifo"), FileType::Fifo, mode, 0).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(build.join("sock")).unwrap();

        assert_eq!(
            remove_below(&fx.root, &rel("build")).unwrap(),
            Removal::Removed
        );
        assert!(!build.exists());
    }

    /// Unmounts on drop, so a failed assertion leaves no mount behind.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    fn mount_tmpfs(at: &Path) -> Option<Mounted> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "reaper-test", &at.display().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        status
            .is_ok_and(|s| s.success())
            .then(|| Mounted(at.to_owned()))
    }

    #[test]
    fn never_empties_another_filesystem() {
        let fx = fixture();
        let build = fx.root.join("build");
        fs::create_dir_all(build.join("mnt")).unwrap();
        fs::write(build.join("file"), "x").unwrap();
        let Some(_mounted) = mount_tmpfs(&build.join("mnt")) else {
            eprintln!("skipped: cannot mount tmpfs here (needs CAP_SYS_ADMIN)");
            return;
        };
        fs::write(build.join("mnt/on-the-mount"), "keep").unwrap();

        // A mount inside the tree, and a mount as the target itself.
        let err = remove_below(&fx.root, &rel("build")).unwrap_err();
        assert!(matches!(&err, PathError::OtherFilesystem { path } if path == "build/mnt"));
        let err = remove_below(&fx.root, &rel("build/mnt")).unwrap_err();
        assert!(matches!(&err, PathError::OtherFilesystem { path } if path == "build/mnt"));
        assert!(err.is_refusal());
        assert!(build.join("mnt/on-the-mount").exists());
    }

    /// Creates a chain of `depth` directories below `dir` by handle (a path that long would
    /// exceed PATH_MAX), with a file at every level.
    fn make_chain(dir: &Path, depth: usize) {
        let mut fd = rustix::fs::open(dir, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..depth {
            rustix::fs::mkdirat(&fd, "d", Mode::RWXU).unwrap();
            let f = rustix::fs::openat(&fd, "f", OFlags::CREATE | OFlags::WRONLY, Mode::RUSR);
            drop(f.unwrap());
            fd = rustix::fs::openat(&fd, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
    }

    #[test]
    fn deep_trees_are_removed_with_a_bounded_number_of_handles() {
        let fx = fixture();
        let build = fx.root.join("deep");
        fs::create_dir(&build).unwrap();
        // Deeper than MAX_OPEN several times over, with branches so that frames are closed,
        // re-opened and listed again on the way back up.
        make_chain(&build, MAX_OPEN * 5);
        fs::create_dir_all(build.join("d/d/d/e/f")).unwrap();
        fs::write(build.join("d/d/d/e/f/g"), "x").unwrap();
        symlink(&fx.outside, build.join("d/d/to-outside")).unwrap();

        assert_eq!(
            remove_below(&fx.root, &rel("deep")).unwrap(),
            Removal::Removed
        );
        assert!(!build.exists());
        fx.assert_outside_intact();
    }

    #[test]
    fn absurdly_deep_trees_are_refused_but_can_be_removed_in_parts() {
        let fx = fixture();
        let build = fx.root.join("abyss");
        fs::create_dir(&build).unwrap();
        make_chain(&build, MAX_DEPTH + 10);

        let err = remove_below(&fx.root, &rel("abyss")).unwrap_err();
        assert!(matches!(err, PathError::TooDeep { .. }), "{err}");
        assert!(err.is_refusal());

        // An operator can still remove it from halfway down, then the rest.
        let half = std::iter::repeat_n("d", MAX_DEPTH / 2)
            .collect::<Vec<_>>()
            .join("/");
        let half = rel(&format!("abyss/{half}"));
        assert_eq!(remove_below(&fx.root, &half).unwrap(), Removal::Removed);
        assert_eq!(
            remove_below(&fx.root, &rel("abyss")).unwrap(),
            Removal::Removed
        );
        assert!(!build.exists());
    }

    #[test]
    fn errors_name_the_entry_that_failed() {
        let emptier = Emptier {
            rel: "a/b",
            dev: 0,
            frames: vec![
                Frame {
                    name: CString::default(),
                    dir: None,
                    ino: 0,
                    made_writable: false,
                },
                Frame {
                    name: CString::new("c").unwrap(),
                    dir: None,
                    ino: 0,
                    made_writable: false,
                },
            ],
            low: 1,
            rescans: 0,
        };
        assert_eq!(emptier.path(0, None), "a/b");
        assert_eq!(emptier.path(1, Some(c"d")), "a/b/c/d");
        let err = io_error("a/b/c", "unlink", Errno::ACCESS);
        assert_eq!(err.metric_label(), "permission");
        assert!(err.to_string().contains("a/b/c"), "{err}");
    }
}
