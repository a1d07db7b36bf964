"""Opening the files bpfcap writes (events, summaries, and every later writer).

bpfcap runs as root, and the path it is handed may be a trap another user laid
in a shared directory: a symbolic link to /etc/shadow, a hard link, a file
that is not ours. The rules (the README's "Security notes" say them too):

- A new file is created with O_EXCL and mode 0600 (events hold command lines).
- An existing regular file is written only if the caller owns it and it has
  one link; it is truncated (``append=True`` adds to it instead) and keeps its
  mode. ``force=True`` writes one owned by someone else, or with other links.
- The final component is never a symbolic link. A symbolic link on the way is
  followed only where nobody else could have planted it (the rule of the
  kernel's fs.protected_symlinks, which is off on many machines): not in a
  directory others can write, unless the link's owner is the caller or the
  directory's owner.
- Character devices and FIFOs are written as they are, mode untouched
  (``-o /dev/null``); ``-``, /dev/stdout, /dev/stderr and /dev/fd/N are this
  process's own descriptors. Directories, sockets and block devices are refused.
- Nothing is ever chmod'ed or chown'ed that bpfcap did not create.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from typing import BinaryIO, Callable, Optional

from .errors import BpfcapError

__all__ = ["OutputError", "Output", "open_output"]

MAX_SYMLINKS = 40  # as the kernel's path walk
OWN_FD = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")
STD_NAMES = {"/dev/stdout": 1, "/dev/stderr": 2}


class OutputError(BpfcapError):
    """bpfcap will not or cannot write an output path; the message names the path and why."""


class Output:
    """A destination of bytes that loses nothing: when writing a file fails
    mid-run (disk full, file system gone), it says so once, with what reached
    the file, and sends the rest, from the first unwritten byte, to stderr."""

    def __init__(self, fd: int, name: str, *, owned: bool = True) -> None:
        self.fd, self.name, self.owned = fd, name, owned
        self.written = 0
        self.failed: Optional[str] = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except InterruptedError:
                continue
            except OSError as e:
                if self.fd == sys.stderr.fileno() or (self.fd == sys.stdout.fileno() and not self.owned):
                    raise
                self._fail_over(e)
                continue
            self.written += n
            view = view[n:]

    def _fail_over(self, e: OSError) -> None:
        self.failed = e.strerror or str(e)
        print(f"bpfcap: error: writing {self.name} failed after {self.written:,} bytes ({self.failed}); "
              "what follows goes to standard error", file=sys.stderr, flush=True)
        self.close()
        self.fd, self.owned, self.name = sys.stderr.fileno(), False, "standard error"

    def close(self) -> None:
        if self.owned:
            self.owned = False
            os.close(self.fd)

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_output(path: Optional[str], default: BinaryIO, *, what: str = "--output",
                append: bool = False, force: bool = False) -> Output:
    """The destination PATH names under the rules above (None or '-': DEFAULT).
    Raises OutputError, in one line that names WHAT, the path and the reason."""
    if path is None or path == "-":
        return Output(default.fileno(), "standard output" if default.fileno() == 1 else "standard error", owned=False)
    own = STD_NAMES.get(path)
    if own is None and (m := OWN_FD.match(path)):
        own = int(m.group(1))
    if own is not None:
        try:
            return Output(os.dup(own), path)
        except OSError:
            raise OutputError(f"cannot write {what} {path!r}: file descriptor {own} is not open") from None

    def refuse(why: str) -> OutputError:
        return OutputError(f"refusing to write {what} {path!r}: {why}")

    dirfd, name = _walk_to_parent(path, refuse)
    try:
        for _ in range(8):  # an entry that vanishes between two steps is looked at again
            try:
                fd = os.open(name, _WRITE | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dirfd)
            except FileExistsError:
                pass
            except OSError as e:
                raise OutputError(f"cannot write {what} {path!r}: {e.strerror}") from None
            else:
                os.fchmod(fd, 0o600)  # ours: owner-only whatever the umask
                return Output(fd, path)
            try:
                fd = _open_existing(dirfd, name, refuse, append=append, force=force)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OutputError(f"cannot write {what} {path!r}: {e.strerror}") from None
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode) and mode & 0o044:
                print(f"bpfcap: warning: {what} {path!r} is readable by others (mode {stat.S_IMODE(mode):04o}) "
                      "and events may hold secrets; bpfcap leaves its mode as it is", file=sys.stderr)
            return Output(fd, path)
        raise OutputError(f"cannot write {what} {path!r}: it keeps changing under us")
    finally:
        os.close(dirfd)


_WRITE = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
Refuse = Callable[[str], OutputError]


def _open_existing(dirfd: int, name: str, refuse: Refuse, *, append: bool, force: bool) -> int:
    """A write descriptor of the existing entry NAME, after checking what it is."""
    pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=dirfd)
            raise refuse(f"it is a symbolic link (to {target!r}); bpfcap writes no file through a symbolic link, name the target itself")
        kind = _refused_kind(st.st_mode)
        if kind:
            raise refuse(f"it is {kind}")
        if stat.S_ISREG(st.st_mode) and not force:
            if st.st_uid != os.geteuid():
                raise refuse(f"it belongs to {_user(st.st_uid)}, not to you; pass --force to overwrite it anyway")
            if st.st_nlink > 1:
                raise refuse(f"it has {st.st_nlink} hard links, so it may be another file's; pass --force to write it anyway")
        flags = _WRITE | (os.O_APPEND if append else 0)
        fd = os.open(name, flags, dir_fd=dirfd)  # FIFOs wait here for a reader, as with `>`
    finally:
        os.close(pfd)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise FileNotFoundError  # replaced in between: look again
    if stat.S_ISREG(now.st_mode):
        if not append:
            os.ftruncate(fd, 0)
    return fd


def _refused_kind(mode: int) -> Optional[str]:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device (writing events there would destroy what it holds)"
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _walk_to_parent(path: str, refuse: Refuse) -> tuple[int, str]:
    """An O_PATH descriptor of the directory that holds PATH's final component,
    and that component's name, reached one component at a time so that no
    symbolic link planted by someone else is followed on the way."""
    if path.endswith("/") or os.path.basename(path) in ("", ".", ".."):
        raise refuse("it names a directory")
    parts = path.split("/")
    dirfd = os.open("/" if path.startswith("/") else ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    todo = [p for p in parts[:-1] if p not in ("", ".")]
    name, links = parts[-1], 0
    walked = "/" if path.startswith("/") else ""
    try:
        while todo:
            part = todo.pop(0)
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except FileNotFoundError:
                raise refuse(f"its directory {os.path.join(walked, part)!r} does not exist") from None
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                here = os.fstat(dirfd)
                if here.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and st.st_uid not in (os.geteuid(), here.st_uid):
                    os.close(fd)
                    raise refuse(f"{os.path.join(walked, part)!r} is a symbolic link owned by {_user(st.st_uid)} "
                                 "in a directory others can write; bpfcap does not follow it")
                links += 1
                if links > MAX_SYMLINKS:
                    os.close(fd)
                    raise refuse("too many levels of symbolic links")
                target = os.readlink(part, dir_fd=dirfd)
                os.close(fd)
                if target.startswith("/"):
                    os.close(dirfd)
                    dirfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    walked = "/"
                todo[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise refuse(f"{os.path.join(walked, part)!r} is not a directory")
            os.close(dirfd)
            dirfd, walked = fd, os.path.join(walked, part)
        return dirfd, name
    except BaseException:
        os.close(dirfd)
        raise
