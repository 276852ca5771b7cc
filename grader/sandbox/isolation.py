"""OS-level protections applied in a freshly forked child, strongest available first.

The child is confined in three stages (docs/sandbox.md has the threat model):

A. `enter_namespaces`: new mount, PID, network and IPC namespaces (as root directly; otherwise
   inside a first user namespace that maps the grader's own id).
B. `lock_down_filesystem` + `mask_paths` (still privileged): every mount read-only, a size-bounded
   tmpfs as the only writable place, the submission's copy bound in read-only, the reference,
   rubric, checks, cache and output folders hidden, the host's sockets covered, and the root
   pivoted into an allow-list of folders. Then, in the namespace's first process,
   `mount_proc` gives it a /proc that shows only its own PID namespace.
C. `drop_privileges`: switch to an unprivileged id when root, enter a *new* user + mount namespace
   (this locks every mount made above: they can be neither unmounted nor made writable from
   inside), drop every capability (bounding and ambient sets included), set `no_new_privs`, bound
   processes/threads with RLIMIT_NPROC and install a seccomp filter (`install_seccomp`).

Each step is tried and its outcome recorded, so results and reports say exactly which protections
were active. Linux only; elsewhere the child still gets its own process group and resource limits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
ALL_NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_DUMPABLE = 4

# GRADEKIT_SANDBOX_UID stays an environment variable on purpose: it is not a grading option (no result
# depends on it) but the identity of a whole process tree, chosen by the Gradescope runner before `grade run`
# starts, and read at import by every process of that tree that switches ids (grader, zygote, child).
def _sandbox_id() -> int:
    """The id student code runs as when the grader is root: "nobody", or the id named by
    GRADEKIT_SANDBOX_UID (the Gradescope runner creates one of its own, so that everything the
    student's code started can be found by its id and killed, and nothing else is)."""
    try:
        uid = int(os.environ.get("GRADEKIT_SANDBOX_UID", "65534"))
    except ValueError:
        return 65534
    return uid if 0 < uid < 2 ** 31 - 1 else 65534


SANDBOX_ID = _sandbox_id()
WRITABLE_MB = 256  # the child's private /tmp (its only writable place besides /dev/shm)
SHM_MB = 64
MAX_TASKS = 64  # processes + threads of one child (torch's own pools included)

# Denied with EPERM by the seccomp filter: everything that could undo the confinement or reach
# another process (the names a kernel lacks are skipped).
DENIED_SYSCALLS = (
    "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv",
    "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "open_by_handle_at", "name_to_handle_at",
    "userfaultfd", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    "iopl", "ioperm", "quotactl", "syslog", "lookup_dcookie", "vhangup", "personality",
    # io_uring performs I/O outside the syscall filter's sight (its opcodes are not syscalls).
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
AF_VSOCK = 40  # socket()/socketpair() of this family are denied: a VM's host is not the network namespace's
MAX_SOCKET_MASKS = 512  # sockets of the host covered one by one (beyond /run); past this the rest is reported


_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def linux() -> bool:
    return sys.platform.startswith("linux")


def _unshare(flags: int) -> bool:
    if not linux():
        return False
    return _lib().unshare(ctypes.c_int(flags)) == 0


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    enc = lambda s: None if s is None else s.encode()
    return _lib().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(text)
        return True
    except OSError:
        return False


def _map_own_ids(uid: int, gid: int) -> bool:
    """Map the caller's own ids 1:1 into the user namespace it just created (allowed unprivileged)."""
    _write("/proc/self/setgroups", "deny")
    return _write("/proc/self/uid_map", f"{uid} {uid} 1") and _write("/proc/self/gid_map", f"{gid} {gid} 1")


def enter_namespaces() -> dict:
    """Stage A: unshare mount, PID, network and IPC namespaces (as root, or via a user namespace)."""
    got = {"network_isolated": False, "filesystem_masking": False, "pid_namespace": False}
    if not linux():
        return got
    wanted = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    ok = os.geteuid() == 0 and _unshare(wanted)
    if not ok:
        uid, gid = os.geteuid(), os.getegid()
        ok = _unshare(wanted | CLONE_NEWUSER) and _map_own_ids(uid, gid)
    if not ok:
        # Partial isolation: at least try the network alone.
        got["network_isolated"] = _unshare(CLONE_NEWNET) or _unshare(CLONE_NEWNET | CLONE_NEWUSER)
        return got
    got["network_isolated"] = True
    got["pid_namespace"] = True
    got["filesystem_masking"] = _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    return got


def mask_paths(paths: list[str]) -> list[str]:
    """Hide each path from this process (needs a private mount namespace). Returns those masked."""
    masked = []
    for p in paths:
        if not os.path.lexists(p):
            continue
        if os.path.isdir(p):
            ok = _mount("tmpfs", p, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=1,mode=000")
        else:
            ok = _mount("/dev/null", p, None, MS_BIND, None) and _mount(
                "none", p, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        if ok:
            masked.append(p)
    return masked


def current_vm_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def apply_limits(memory_mb: int, file_mb: int = 256) -> dict:
    """Cap address space (on top of what is already mapped: torch maps a lot), file size, core dumps."""
    applied = {}
    try:
        limit = current_vm_bytes() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        applied["memory_limit_mb"] = memory_mb
    except (ValueError, OSError):
        applied["memory_limit_mb"] = None
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    except (ValueError, OSError):
        pass
    return applied


_PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "securityfs", "debugfs",
              "tracefs", "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "nsfs"}


_MOUNT_FLAG_WORDS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
                     "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}


def _mount_points() -> list[tuple[int, str, str, int]]:
    """(mount id, mount point, fs type, its per-mount flags) of every mount in this process's mount
    table, parents first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                point = fields[4].encode().decode("unicode_escape")
                flags = 0
                for word in fields[5].split(","):
                    flags |= _MOUNT_FLAG_WORDS.get(word, 0)
                out.append((int(fields[0]), point, right.split()[0], flags))
    except (OSError, ValueError, IndexError):
        pass
    return sorted(out, key=lambda p: p[1].count("/"))


def _mount_id_at(path: str) -> int | None:
    """The id of the mount that `path` resolves to now (None if it cannot be opened)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    finally:
        os.close(fd)
    return None


def remount_read_only(writable: set[str]) -> list[str]:
    """Re-mount every reachable mount read-only, nosuid, nodev (except `writable` and pseudo file
    systems). A mount that no path reaches any more (shadowed by a later mount on or above its
    mount point, or under the private /tmp: common in containers and pods) cannot be opened by
    the child either, so it is skipped. Returns '<mount point> (<fs type>)' for each reachable
    mount that could not be made read-only: the sandbox then refuses to run and names them."""
    failed = []
    for mnt_id, point, fstype, kept in _mount_points():
        if fstype in _PSEUDO_FS or point in writable or point.startswith(("/proc", "/sys", "/dev")):
            continue
        # The mount's own flags are kept: a mount inherited from a more privileged namespace (a
        # container's) has them locked, and a remount that drops one is refused.
        base = MS_REMOUNT | MS_BIND | MS_RDONLY | kept
        if _mount("none", point, None, base | MS_NOSUID | MS_NODEV, None) or _mount("none", point, None, base, None):
            continue
        if _mount_id_at(point) != mnt_id:
            continue  # not reachable: nothing to protect
        failed.append(f"{point} ({fstype})")
    return failed


def host_socket_paths() -> list[str]:
    """Paths of the UNIX sockets bound in this network namespace (/proc/net/unix): read before the
    child leaves it, so the sockets of the host's services and of the grading user can be covered."""
    out = []
    try:
        with open("/proc/net/unix", "rb") as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 7)
                if len(parts) == 8 and parts[7].startswith(b"/"):
                    out.append(os.fsdecode(parts[7].rstrip(b"\n")))
    except OSError:
        pass
    return sorted(set(out))


# Folders that hold the sockets of the host's services (systemd, D-Bus, the user's session bus,
# ssh-agent and gpg-agent under /run/user/UID): covered whole by an empty read-only tmpfs.
SOCKET_FOLDERS = ("/run", "/var/run", "/var/lib/sss/pipes")


def hide_host_sockets(known: list[str], needed: list[str]) -> dict:
    """No file-system socket of the host stays reachable: SOCKET_FOLDERS covered by an empty
    read-only tmpfs (unless the interpreter lives there), then every socket still visible among
    `known` (host_socket_paths) and under /dev covered by /dev/null (connect() is refused).
    Abstract sockets need nothing: they belong to the network namespace the child left."""
    keep = [os.path.realpath(p) for p in needed]
    covered = []
    for d in SOCKET_FOLDERS:
        if os.path.islink(d) or not os.path.isdir(d):
            continue
        real = os.path.realpath(d)
        if any(k == real or k.startswith(real + os.sep) for k in keep):
            continue
        if _mount("tmpfs", real, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=1,mode=755"):
            covered.append(real)
    candidates = list(known)
    for root, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if d not in ("pts", "shm", "mqueue", "hugepages")]
        candidates += [os.path.join(root, n) for n in files]
    sockets, left = [], []
    for p in dict.fromkeys(candidates):
        try:
            if not stat.S_ISSOCK(os.lstat(p).st_mode):
                continue
        except OSError:
            continue  # gone or already hidden
        if len(sockets) >= MAX_SOCKET_MASKS:
            left.append(p)
        elif _mount("/dev/null", p, None, MS_BIND, None):
            sockets.append(p)
        else:
            left.append(p)
    return {"host_sockets_hidden": not left, "socket_folders_covered": covered,
            "sockets_covered": len(sockets), "sockets_left": left[:20]}


def lock_down_filesystem(scratch: str, tmp_root: str, needed: list[str], writable_mb: int = WRITABLE_MB,
                         sockets: list[str] = (), hide: list[str] = ()) -> dict:
    """Stage B: every mount read-only; a private, size-bounded tmpfs over `tmp_root` (which hides
    every other run, the grader's logs and the zygote's folder); the submission's copy `scratch`
    shown at its own path as an overlay whose writes land in that tmpfs, so the child may write
    next to its files while the grader's copy never changes (read-only if overlays are refused).
    `needed` are paths that must stay visible (the interpreter, its packages, the grader's code):
    those below `tmp_root` are bound back into the private tmpfs. `sockets`: host_socket_paths(),
    read before the network namespace was left (hide_host_sockets covers them). `hide`: paths
    covered (mask_paths) before the child's root becomes an allow-list (enter_allow_list_root)."""
    got = {"read_only_filesystem": False, "private_tmp": False, "writable_mb": None, "writable_submission": False}
    keep_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    try:
        tmp_real = os.path.realpath(tmp_root)
        writable = set()
        # Needed folders below the temp dir (a checkout and its .venv in /tmp) are bound back into
        # the private tmpfs (read-only, like every mount, below); the rest of /tmp stays hidden.
        under = sorted({os.path.realpath(p) for p in needed
                        if os.path.isdir(p) and os.path.realpath(p).startswith(tmp_real + os.sep)})
        under = [p for p in under if not any(p.startswith(q + os.sep) for q in under)]
        kept = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in under]
        try:
            opts = f"size={writable_mb}m,nr_inodes=65536,mode=1777"
            if _mount("tmpfs", tmp_real, "tmpfs", MS_NOSUID | MS_NODEV, opts):
                writable.add(tmp_real)
                got["writable_mb"] = writable_mb
                got.update(_show_scratch(keep_fd, scratch, tmp_real))
                for p, fd in kept:
                    _walkable(p, tmp_real)
                    _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
        finally:
            for _, fd in kept:
                os.close(fd)
        if os.path.isdir("/dev/shm") and _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                                                f"size={SHM_MB}m,nr_inodes=4096,mode=1777"):
            writable.add("/dev/shm")
        got["covered_for_sandbox_id"] = expose_needed(needed)
        if os.path.isdir("/dev/pts"):  # no terminal of the grader's user to write to
            _mount("tmpfs", "/dev/pts", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=755")
        if got["writable_submission"]:
            writable.add(scratch)
        # Masks first: the allow-list root copies the needed folders with what covers their insides.
        got["masked_paths"] = mask_paths(hide)
        got["allow_list_root"] = enter_allow_list_root(tmp_real, ([scratch] if got["private_tmp"] else []) + under,
                                                       needed)
        got.update(hide_host_sockets(sockets, needed))
        failed = remount_read_only(writable)
        got["read_only_filesystem"] = not failed
        if failed:
            got["not_read_only"] = failed
    finally:
        os.close(keep_fd)
    return got


# Folders of / that the child's root holds (when present): the system's programs, libraries and
# configuration. Everything else (/home, /root, /srv, /mnt, /media, /run, /var, the grader's run, class
# and output folders) is absent unless it is a needed folder, and then only that folder.
SYSTEM_FOLDERS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "nix", "gnu", "snap")
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}


def enter_allow_list_root(tmp_real: str, in_tmp: list[str], needed: list[str]) -> bool:
    """Make the child's root a fresh tmpfs holding only SYSTEM_FOLDERS, /dev, /sys, /proc, the
    private temp dir (with `in_tmp`: the submission's overlay and needed folders bound back) and the
    `needed` folders themselves, each at its own path; then pivot_root into it and detach the old
    root. Folders that are not there cannot be opened and are not named in /proc/self/mountinfo
    (the class folder, the output folder, the model cache, other users' homes). False (and the
    old root kept) when a step fails."""
    import platform

    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        return False
    root = os.path.join(tmp_real, ".gradekit-root")
    os.makedirs(root, mode=0o755, exist_ok=True)
    if not _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=8192,mode=755"):
        return False
    bound: list[str] = []

    def bind(src: str, recursive: bool = True) -> bool:
        dst = root + src
        os.makedirs(dst, mode=0o755, exist_ok=True)
        bound.append(src)
        return _mount(src, dst, None, MS_BIND | (MS_REC if recursive else 0), None)

    ok = True
    try:
        for name in SYSTEM_FOLDERS:
            p = "/" + name
            if os.path.islink(p):
                os.symlink(os.readlink(p), root + p)
            elif os.path.isdir(p):
                ok &= bind(p)
        for p in ("/dev", "/sys", "/proc"):  # /proc: a fresh one is mounted over it (stage B's end)
            if os.path.isdir(p):
                ok &= bind(p)
        ok &= bind(tmp_real, recursive=False)  # the private tmpfs, without this new root inside it
        for p in in_tmp:
            ok &= bind(p)
        inside = lambda p: any(p == b or p.startswith(b.rstrip("/") + "/") for b in bound)
        # The running interpreter's own folders always: it imports lazily (codecs, stdlib modules).
        own = [sys.prefix, sys.base_prefix, sys.exec_prefix, *[p for p in sys.path if p]]
        for p in sorted({os.path.realpath(n) for n in [*needed, *own] if os.path.isdir(n)}):
            if not inside(p):
                ok &= bind(p)
        os.chmod(root, 0o755)
    except OSError:
        ok = False
    if ok:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)
        try:
            os.chdir(root)
            ok = _lib().syscall(nr, b".", b".") == 0  # pivot_root(".", "."): the old root lands on top
            if ok:
                ok = _lib().umount2(b".", 2) == 0  # MNT_DETACH the old root
                os.chdir("/")
            else:
                os.fchdir(cwd)
        finally:
            os.close(cwd)
    if not ok:
        _lib().umount2(root.encode(), 2)
    return bool(ok)


def _walkable(path: str, tmp_real: str) -> None:
    """Create `path` inside the fresh tmpfs and let an unprivileged id walk down to it."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    parent = os.path.dirname(path)
    while parent.startswith(tmp_real + os.sep):
        os.chmod(parent, 0o755)
        parent = os.path.dirname(parent)


def _show_scratch(keep_fd: int, scratch: str, tmp_real: str) -> dict:
    """Make `scratch` (whose directory `keep_fd` holds) visible again inside the fresh tmpfs."""
    _walkable(scratch, tmp_real)
    base = os.path.join(tmp_real, ".gradekit-overlay")
    lower, upper, work = (os.path.join(base, d) for d in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        os.makedirs(d, mode=0o755, exist_ok=True)
    if os.geteuid() == 0:  # stage C runs the code as SANDBOX_ID: it must own what it may write
        for d in (upper, work):
            os.chown(d, SANDBOX_ID, SANDBOX_ID)
    if _mount(f"/proc/self/fd/{keep_fd}", lower, None, MS_BIND, None):
        _mount("none", lower, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if _mount("overlay", scratch, "overlay", MS_NOSUID | MS_NODEV, opts):
            if os.geteuid() == 0:
                os.chown(scratch, SANDBOX_ID, SANDBOX_ID)  # copied up: the grader's copy keeps its owner
            _lib().umount2(lower.encode(), 2)  # MNT_DETACH: the overlay keeps its own reference
            os.chmod(base, 0o700)
            return {"private_tmp": True, "writable_submission": True}
        _lib().umount2(lower.encode(), 2)
    ok = _mount(f"/proc/self/fd/{keep_fd}", scratch, None, MS_BIND, None)
    return {"private_tmp": ok, "writable_submission": False}


def expose_needed(needed: list[str]) -> list[str]:
    """Root only (stage C runs the code as SANDBOX_ID): where a folder the child needs (the
    interpreter, its packages) lies below one the sandbox id may not enter (e.g. /root, 0700),
    cover that folder with an empty tmpfs and bind only the needed folders back into it. The rest
    of it (the grading user's home, its secrets) stays out of sight. Returns the covered folders."""
    if os.geteuid() != 0:
        return []
    blocked: dict[str, list[str]] = {}
    for p in {os.path.realpath(p) for p in needed if os.path.isdir(p)}:
        walked = "/"
        for part in p.strip("/").split("/")[:-1]:
            walked = os.path.join(walked, part)
            if not os.stat(walked).st_mode & 0o001:
                blocked.setdefault(walked, []).append(p)
                break
    covered = []
    for top, paths in sorted(blocked.items()):
        fds = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in sorted(paths)]
        try:
            if not _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=755"):
                continue
            covered.append(top)
            for p, fd in fds:
                os.makedirs(p, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
        finally:
            for _, fd in fds:
                os.close(fd)
    return covered


def mount_proc() -> bool:
    """A /proc that shows only this PID namespace (call in its first process, before stage C)."""
    return _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)


# ---- stage C ------------------------------------------------------------------------------------
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> bool:
    libc = _lib()
    for cap in range(64):  # bounding set first (needs CAP_SETPCAP, which we still hold)
        libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    libc.capset(ctypes.byref(header), data)
    return _status_field("CapEff") == 0 and _status_field("CapPrm") == 0 and _status_field("CapBnd") == 0


def _status_field(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return None


def drop_privileges(max_tasks: int = MAX_TASKS, switch_user: bool = True) -> dict:
    """Stage C (in the PID namespace's first process, after the mounts and /proc are set).

    Root becomes SANDBOX_ID in every case. `switch_user` (only when stages A and B worked): a user +
    mount namespace of its own then locks the mounts. Every capability is dropped. `no_new_privs`, the task bound and seccomp apply in every case."""
    got = {"unprivileged_id": os.geteuid() != 0, "user_namespace": False, "capabilities_dropped": False,
           "no_new_privs": False, "max_tasks": None, "seccomp": None}
    if not linux():
        return got
    if os.geteuid() == 0:
        # Root never runs student code, with or without namespaces (without them, e.g. in a
        # Gradescope container, the id is all that keeps it from the grader and its results).
        try:
            os.setgroups([])
            os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
            os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)  # drops root's capabilities too
        except OSError:
            pass
        _lib().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # a uid change clears it; /proc/self/uid_map needs it
    got["unprivileged_id"] = os.geteuid() != 0 and os.getuid() != 0
    if switch_user:
        uid, gid = os.geteuid(), os.getegid()
        # A user namespace owned by the unprivileged id, with its own mount namespace: the mounts
        # made above come from a more privileged namespace, so the kernel locks them.
        got["user_namespace"] = _unshare(CLONE_NEWUSER | CLONE_NEWNS) and _map_own_ids(uid, gid)
    got["capabilities_dropped"] = _drop_capabilities()
    got["no_new_privs"] = _lib().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    try:  # counted per user namespace (Linux >= 5.14): only this child's tasks
        resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks, max_tasks))
        got["max_tasks"] = max_tasks
    except (ValueError, OSError):
        pass
    got["seccomp"] = install_seccomp() if got["no_new_privs"] else None
    return got


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ = 4
_SCMP_CMP_MASKED_EQ = 7


def _errno_action(e: int) -> int:
    return 0x00050000 | (e & 0xFFFF)


def install_seccomp() -> str | None:
    """Deny DENIED_SYSCALLS and namespace-creating clone() with EPERM (clone3 with ENOSYS, so libc
    falls back to clone), and AF_VSOCK sockets with EAFNOSUPPORT. Uses the system's libseccomp through ctypes; None when it is missing."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return None
    try:
        deny = _errno_action(errno.EPERM)
        ok = True
        for call in DENIED_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(call.encode())
            if nr >= 0:
                ok &= lib.seccomp_rule_add_array(ctx, deny, nr, 0, None) == 0
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET):
            cmp = _ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag)
            ok &= lib.seccomp_rule_add_array(ctx, deny, clone, 1, ctypes.byref(cmp)) == 0
        for call in (b"socket", b"socketpair"):  # no AF_VSOCK: it reaches a VM's host, no namespace covers it
            cmp = _ArgCmp(0, _SCMP_CMP_EQ, AF_VSOCK, 0)
            ok &= lib.seccomp_rule_add_array(ctx, _errno_action(errno.EAFNOSUPPORT), lib.seccomp_syscall_resolve_name(call),
                                             1, ctypes.byref(cmp)) == 0
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            ok &= lib.seccomp_rule_add_array(ctx, _errno_action(errno.ENOSYS), clone3, 0, None) == 0
        if not ok or lib.seccomp_load(ctx) != 0:
            return None
        return "libseccomp"
    finally:
        lib.seccomp_release(ctx)
