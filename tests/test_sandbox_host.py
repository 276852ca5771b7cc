"""The child reaches no service of the host (issue 19; docs/sandbox.md "Host services").

Each attack is the reference solution plus code that tries to reach, from the sandbox, a UNIX
socket of the host: a world-writable one of a root service (like /dev/log or the D-Bus system bus)
and the grading user's own 0600 ones (like ssh-agent, gpg-agent, the D-Bus session bus); then an
AF_VSOCK socket and io_uring. The listening sockets live in the test process, so a connection that
got through is seen from outside the sandbox, not only reported by the child. Run as root and with
the whole grader unprivileged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from grader.sandbox import isolation
from tests.conftest import make_submission
from tests.test_sandbox_escape import _unprivileged_prefix, escape_attempts
from tests.test_sandbox_hostile import QUICK, attack, fast_rubric, full, grade  # noqa: F401  (fixture)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="namespaces are Linux only")


class Listener:
    """A UNIX socket at `path` that counts the connections it accepts (from a thread)."""

    def __init__(self, path: Path, mode: int, owner: int | None = None):
        self.path, self.accepted = path, 0
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, mode)
        if owner is not None:
            os.chown(path, owner, owner)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()
        self.path.unlink(missing_ok=True)


def host_attack(paths: list[str]) -> str:
    """Student code: connect to each path, open an AF_VSOCK socket, set up an io_uring."""
    return attack(f"""
        import ctypes as _ct, socket as _so
        for _p in {paths!r}:
            _s = _so.socket(_so.AF_UNIX, _so.SOCK_STREAM)
            try:
                _s.connect(_p)
                print("[escape] connect to a host socket SUCCEEDED")
            except OSError as _e:
                print("host socket refused:", _e.strerror)
            _s.close()
        try:
            _so.socket(40, _so.SOCK_STREAM)  # AF_VSOCK
            print("[escape] AF_VSOCK socket SUCCEEDED")
        except OSError as _e:
            print("vsock refused:", _e.strerror)
        _libc = _ct.CDLL(None, use_errno=True)
        _params = _ct.create_string_buffer(120)
        _fd = _libc.syscall(425, 4, _params)  # io_uring_setup(4, &params) on x86_64 and arm64
        print("[escape] io_uring_setup SUCCEEDED" if _fd >= 0 else "io_uring refused: errno %d" % _ct.get_errno())
    """)


@linux_only
def test_host_sockets_vsock_and_io_uring_are_unreachable_as_root(tmp_path, fast_rubric):
    if os.geteuid() != 0:
        pytest.skip("the root variant needs a root grader (the unprivileged one runs below)")
    folder = Path(tempfile.mkdtemp(prefix="gradekit-host-", dir="/var/tmp"))  # outside the private /tmp
    os.chmod(folder, 0o755)
    run = Path("/run") / f"gradekit-test-{os.getpid()}.sock"
    listeners = [Listener(folder / "log", 0o777), Listener(folder / "agent.sock", 0o600, owner=isolation.SANDBOX_ID)]
    if os.access("/run", os.W_OK):
        listeners.append(Listener(run, 0o777))  # where system services keep theirs
    try:
        sub = make_submission(tmp_path, "hostsock", host_attack([str(l.path) for l in listeners]))
        result = grade(sub, fast_rubric)
        out = result.student_output
        assert out.count("host socket refused") == len(listeners), out
        assert "vsock refused" in out and "io_uring refused" in out, out
        assert not escape_attempts(out), out
        assert [l.accepted for l in listeners] == [0] * len(listeners)
        assert result.sandbox["host_sockets_hidden"], result.sandbox
        assert all(full(result, c) for c in QUICK), [t.output for t in result.tests]
    finally:
        for l in listeners:
            l.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@linux_only
def test_the_grading_users_own_sockets_are_unreachable_when_unprivileged():
    """The grader runs as an ordinary user; its own 0600 sockets (agent, session bus) sit in its
    home. The child runs as that same user inside its namespaces: only hiding them keeps it out."""
    from tests.test_sandbox_escape import _grade_cli  # noqa: F401  (same CLI runner as the escape tests)

    found = _unprivileged_prefix()
    if found is None:
        pytest.skip("no way to run this interpreter unprivileged here (setpriv/unshare)")
    prefix, what = found
    uid = os.geteuid() if not prefix else (65534 if "setpriv" in prefix[0] else 0)
    base = Path(tempfile.mkdtemp(prefix="gradekit-host-", dir="/var/tmp"))
    home = Path(tempfile.mkdtemp(prefix="gradekit-home-", dir="/var/tmp"))  # not under the hidden class folder
    agent = home / ".local" / "agent"  # where no hide list looks (~/.gnupg and ~/.ssh are hidden anyway)
    agent.mkdir(parents=True)
    for d in (base, home, home / ".local", agent):
        os.chmod(d, 0o755)
    owner = uid if os.geteuid() == 0 else None
    listeners = [Listener(agent / "S.gpg-agent", 0o600, owner=owner), Listener(home / "bus", 0o600, owner=owner)]
    out = base / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    try:
        sub = make_submission(base, "hostsock", host_attack([str(l.path) for l in listeners]))
        for p in [sub, *sub.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        import subprocess

        from tests.conftest import REPO

        grade_cmd = str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade"
        r = subprocess.run(prefix + [grade_cmd, "run", str(sub), "--out", str(out), "--only", ",".join(QUICK),
                                     "--device", "cpu"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HOME": str(home), "GRADEKIT_CACHE": str(base / "cache")})
        if "cannot isolate" in r.stdout + r.stderr:
            pytest.skip("this kernel does not give unprivileged users a user namespace")
        assert r.returncode == 0, r.stdout + r.stderr
        g = json.loads((out / "hostsock" / "results.json").read_text())["extra_data"]["gradekit"]
        assert g["student_output"].count("host socket refused") == 2, (what, g["student_output"])
        assert not escape_attempts(g["student_output"]), (what, g["student_output"])
        assert [l.accepted for l in listeners] == [0, 0]
        assert g["sandbox"]["host_sockets_hidden"] and g["sandbox"]["user_namespace"] and g["sandbox"]["allow_list_root"]
    finally:
        for l in listeners:
            l.close()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_socket_paths_are_read_from_the_network_namespaces_table(tmp_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "probe.sock"))
        s.listen(1)
        assert str(tmp_path / "probe.sock") in isolation.host_socket_paths()


CONTAINER_MOUNTS = """
set -e
mkdir -p {d}/extra/inner {d}/bindsrc /tmp/gradekit-h2-bound {d}/shadow
mount -t tmpfs tmpfs {d}/extra                      # a tmpfs inside the tree (pods: emptyDir)
mkdir -p {d}/extra/inner && mount -t tmpfs tmpfs {d}/extra/inner
mount -t tmpfs tmpfs {d}/extra                      # ... shadowed by a later mount on the same point
mount --bind {d}/bindsrc /tmp/gradekit-h2-bound     # a bind mount under the temp dir (hidden by the private /tmp)
mount --bind {d}/bindsrc {d}/shadow                 # a plain bind mount
mkdir -p {d}/noexec && mount -t tmpfs -o noexec,nosuid,nodev,noatime tmpfs {d}/noexec  # flags locked for a userns
exec "$@"
"""


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("who", ["root", "unprivileged"])
def test_the_sandbox_runs_with_a_containers_extra_mounts(tmp_path, who):
    """A worker whose mount table holds tmpfs, bind and shadowed mounts inside the tree (as in
    containers and pods) grades with every protection, in a mount namespace of its own; the
    unprivileged grader sees them as locked mounts of a more privileged namespace."""
    import subprocess

    from tests.conftest import REPO

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to build the mount table")
    d = Path(tempfile.mkdtemp(prefix="gradekit-mounts-", dir="/var/tmp"))
    try:
        prefix = []
        if who == "unprivileged":
            found = _unprivileged_prefix()
            if found is None:
                pytest.skip("no way to run this interpreter unprivileged here")
            prefix = found[0]
            os.chmod(tmp_path, 0o755)
        sub = make_submission(tmp_path, "mounts")
        out = tmp_path / "out"
        out.mkdir(mode=0o777)
        os.chmod(out, 0o777)
        for p in [sub, *sub.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        script = tmp_path / "mounts.sh"
        script.write_text(CONTAINER_MOUNTS.format(d=d))
        grade_cmd = str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade"
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", str(script), *prefix, grade_cmd, "run",
                            str(sub), "--out", str(out), "--only", ",".join(QUICK), "--device", "cpu"],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "GRADEKIT_CACHE": str(tmp_path / "cache")})
        assert r.returncode == 0, r.stdout + r.stderr
        g = json.loads((out / "mounts" / "results.json").read_text())["extra_data"]["gradekit"]
        assert g["sandbox"]["read_only_filesystem"] and "not_read_only" not in g["sandbox"], g["sandbox"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_refusal_names_the_mounts_it_could_not_make_read_only():
    from grader.sandbox.client import isolation_message

    msg = isolation_message(["read-only file system"], {"pid_namespace": True, "not_read_only": ["/data (nfs4)"]})
    assert "/data (nfs4)" in msg and "user namespaces" not in msg
    assert "user namespaces" in isolation_message(["own PID namespace"], {"pid_namespace": False})


@linux_only
def test_the_childs_tree_is_an_allow_list_that_names_no_class_or_output_folder(tmp_path, fast_rubric):
    """The class folder and the output folder (outside the temp dir, as on an instructor's machine)
    are neither reachable nor named in the child's /proc/self/mountinfo; no home of the machine is."""
    from grader.engine import GradeOptions, grade_submission

    base = Path(tempfile.mkdtemp(prefix="gradekit-classdir-", dir="/var/tmp"))
    try:
        os.chmod(base, 0o755)
        out = base / "gradekit-outdir"
        sub = make_submission(base / "gradekit-classlist", "tree", attack("""
            import os as _os
            _mi = open("/proc/self/mountinfo").read()
            for _word in ("gradekit-classdir", "gradekit-classlist", "gradekit-outdir"):
                print("[escape] mountinfo names", _word, "SUCCEEDED" if _word in _mi else "no")
            for _p in ("/var/tmp", "/home", "/root", "/run", "/srv", "/mnt"):
                _seen = [n for n in (_os.listdir(_p) if _os.path.isdir(_p) else []) if "gradekit" in n]
                print("[escape] listing", _p, "SUCCEEDED" if _seen else "no")
        """))
        result = grade_submission(sub, fast_rubric, GradeOptions(device="cpu", only=QUICK, out_dir=out))
        assert result.sandbox.get("allow_list_root"), result.sandbox
        assert "mountinfo names" in result.student_output, result.student_output
        assert not escape_attempts(result.student_output), result.student_output
        assert all(full(result, c) for c in QUICK), [t.output for t in result.tests]
    finally:
        shutil.rmtree(base, ignore_errors=True)
