"""Atomic file writes: readers see the old file or the whole new one, and a save leaves no
temporary file behind, even when the process is killed mid-write.

>>> with atomic_write("model.npz") as f:      # doctest: +SKIP
...     np.savez(f, **arrays)

Why ``O_TMPFILE``: the usual recipe (write a named temporary file, rename it into place,
remove it on error) cannot clean up after SIGKILL, an out-of-memory kill or a power cut, and
each such death leaves a stray ``.tmp`` file in the user's folder. On Linux an
``O_TMPFILE`` file is an inode with no name at all: if the process dies before it is
published, the kernel frees it and nothing is left. Once written and fsynced, it is given a
name: linked straight to the target when there is none yet (``link`` never overwrites), else
linked to a temporary name and renamed over the target, which is atomic. Only that last
step, two system calls long, can leave a name behind if killed in between.

Where ``O_TMPFILE`` is missing (other systems) or refused (filesystems without it, old
kernels, no ``/proc``), a named temporary file in the target's folder is used, and removed
on any exception, ``KeyboardInterrupt`` included. Either way:

- the file gets the permissions of a normally created one (``0o666`` less the umask, or
  the folder's default ACL), never ``mkstemp``'s private ``0o600``;
- the data is fsynced before it is published, and the folder after, so a saved file
  survives a power cut;
- errors name the target (or nothing, for a failed write), never the temporary name, which
  means nothing to the user.
"""
import contextlib
import errno
import os
import secrets

# what open(O_TMPFILE) fails with where the filesystem or kernel cannot make unnamed files
# (an old kernel reads O_TMPFILE as O_DIRECTORY, and a directory cannot be opened to write)
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL}
_PROC_FD = "/proc/self/fd"


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """A file object open for writing (``mode`` "wb" or "w") that replaces ``path`` when the
    ``with`` block ends without an exception, and vanishes if it raises."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes a new file: mode must be 'wb' or 'w', got {mode!r}")
    target = os.path.abspath(os.fspath(path))
    folder = _open_folder(target)
    try:
        fd = None if folder is None else _open_unnamed(folder, target)
        if fd is None:
            with _named(target, mode, encoding) as f:
                yield f
            return
        with os.fdopen(fd, mode, encoding=encoding) as f:  # closes fd, even if it fails
            yield f
            _flush(f)
            _link(folder, f.fileno(), target)
        with contextlib.suppress(OSError):  # durability is best effort: some filesystems refuse
            os.fsync(folder)
    finally:
        if folder is not None:
            os.close(folder)


def _open_folder(target):
    """A descriptor of ``target``'s folder where unnamed files may work, else None."""
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir(_PROC_FD):
        return None
    return _about(target, os.open, os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)


def _open_unnamed(folder, target):
    """A descriptor of a new unnamed file in ``folder``, or None if it cannot have one."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o666, dir_fd=folder)
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            return None
        raise _renamed(error, target) from None


def _link(folder, fd, target):
    """Give the unnamed file ``fd`` the name ``target``, replacing any file there.

    os.link calls linkat(AT_SYMLINK_FOLLOW) only when given a dir_fd; without one it calls
    link(), which would link /proc's symbolic link itself (and fail with EXDEV)."""
    source, name = f"{_PROC_FD}/{fd}", os.path.basename(target)
    try:
        os.link(source, name, dst_dir_fd=folder)
        return
    except FileExistsError:
        pass  # the usual case of a save over an old file: link aside, then rename over it
    except OSError as error:
        raise _renamed(error, target) from None
    temporary = _temporary_name(name)
    _about(target, os.link, source, temporary, dst_dir_fd=folder)
    try:
        _about(target, os.replace, temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise


@contextlib.contextmanager
def _named(target, mode, encoding):
    """The fallback: a named temporary file beside ``target``, renamed over it."""
    temporary = _temporary_name(target)
    fd = _about(target, os.open, temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            _flush(f)
        _about(target, os.replace, temporary, target)  # closed first: Windows cannot rename an open file
        temporary = None
        _sync_folder(os.path.dirname(target))
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _flush(f):
    f.flush()
    os.fsync(f.fileno())


def _temporary_name(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")


def _sync_folder(folder):
    """Make a new name durable; best effort, as some systems cannot fsync a folder."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no O_DIRECTORY
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _about(target, call, *args, **kwargs):
    """``call(*args, **kwargs)``, with an OSError made to name ``target``, not our own paths."""
    try:
        return call(*args, **kwargs)
    except OSError as error:
        raise _renamed(error, target) from None


def _renamed(error, target):
    return type(error)(error.errno, error.strerror, target)
