"""OS-level protections applied in a freshly forked child, strongest available first.

Each step is tried and its outcome recorded, so results and reports can say exactly which
protections were active (see docs/sandbox.md). Linux only for namespaces; elsewhere the child
still gets its own process group, resource limits and a scrubbed import path.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _unshare(flags: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    return _lib().unshare(ctypes.c_int(flags)) == 0


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    enc = lambda s: None if s is None else s.encode()
    return _lib().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def enter_namespaces() -> dict:
    """Unshare network, mount and PID namespaces (as root, or via a user namespace). Returns flags."""
    got = {"network_isolated": False, "filesystem_masking": False, "pid_namespace": False}
    if not sys.platform.startswith("linux"):
        return got
    wanted = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID
    if _unshare(wanted):
        ok = True
    else:
        uid, gid = os.getuid(), os.getgid()
        ok = _unshare(wanted | CLONE_NEWUSER)
        if ok:  # map ourselves to root inside the user namespace so mounts are allowed
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"0 {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"0 {gid} 1")
            except OSError:
                pass
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
        if not os.path.exists(p):
            continue
        if os.path.isdir(p):
            ok = _mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=4k,mode=000")
        else:
            ok = _mount("/dev/null", p, None, MS_BIND, None)
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


MS_REMOUNT = 32
_PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "securityfs", "debugfs",
              "tracefs", "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "nsfs"}


def _mount_points() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount visible to this process, parents first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split()[4].encode().decode("unicode_escape")
                out.append((point, right.split()[0]))
    except OSError:
        pass
    return sorted(out, key=lambda p: p[0].count("/"))


def lock_down_filesystem(run_dir: str, tmp_root: str, needed: list[str]) -> dict:
    """Make every mount read-only and give the child a private, empty `tmp_root` holding only its
    own `run_dir` (writable). Needs a private mount namespace. `needed` are paths that must stay
    visible (the interpreter and its packages): if one lives under `tmp_root`, /tmp stays shared."""
    got = {"read_only_filesystem": False, "private_tmp": False}
    keep_fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        # 1. The writable places first (a bind mount inherits its source's read-only flag).
        tmp_real = os.path.realpath(tmp_root)
        if not any(os.path.realpath(p).startswith(tmp_real + os.sep) for p in needed):
            if _mount("tmpfs", tmp_real, "tmpfs", 0, "size=1g,mode=1777"):
                os.makedirs(run_dir, exist_ok=True)
                got["private_tmp"] = _mount(f"/proc/self/fd/{keep_fd}", run_dir, None, MS_BIND, None)
        if not got["private_tmp"]:
            _mount(run_dir, run_dir, None, MS_BIND, None)
        if os.path.isdir("/dev/shm"):  # shared memory is per-child too
            _mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=256m,mode=1777")
        writable = {tmp_real, os.path.realpath(run_dir)}
        # 2. Everything else read-only.
        ok = True
        for point, fstype in _mount_points():
            if fstype in _PSEUDO_FS or point in writable or point.startswith(("/proc", "/sys", "/dev")):
                continue
            ok &= _mount("none", point, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        got["read_only_filesystem"] = bool(ok)
    finally:
        os.close(keep_fd)
    return got
