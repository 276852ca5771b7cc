"""The warm template process: imports torch and numpy once, then forks one child per request.

Started by `client.Zygote` as `python -m grader.sandbox.zygote FD`, or forked off the `grade`
command itself right after it imported torch and before it imported anything of the grader's
(`Zygote.launch(fork_here=True)`: one torch import instead of two). Forking it costs milliseconds,
where a fresh Python process pays ~2 s to import torch. It never imports `reference`, the rubric
or the checks, so no child inherits them.

Control protocol on the SOCK_SEQPACKET socket FD: the grader sends a JSON config together with up to
three file descriptors (the child's end of a stream socket, the output log, the status pipe's write
end: see `child.run`); the zygote forks and answers {"pid": N}.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    preload()
    serve(ctl)


def preload() -> None:
    """What every child needs imported (also called by a grader about to fork a zygote off itself)."""
    import numpy  # noqa: F401  (preloaded for every child)
    import torch  # noqa: F401

    from grader.sandbox import child  # noqa: F401


def serve(ctl: socket.socket) -> None:
    """Announce readiness on `ctl`, then fork a child per request until `ctl` closes."""
    from grader.sandbox import child

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    trained = False
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
        except OSError:
            return
        if not msg:
            return
        config = json.loads(msg)
        if config.get("prepare") == "training":  # fire and forget: no reply; later forks wait for it
            if not trained:
                _prepare_training()
                trained = True
            continue
        pid = os.fork()
        if pid == 0:
            ctl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            child.run(fds, config)  # never returns
        for fd in fds:
            os.close(fd)
        ctl.send(json.dumps({"pid": pid}).encode())


def _prepare_training() -> None:
    """Preload what a child needs to train a model, once, so that no child pays it.

    Creating the first optimiser imports torch._dynamo (~2.5 s). Done on request (only when the
    grader will train: model-level checks), not at start-up: `grade check` and unit-only runs
    would otherwise wait for it before their first child."""
    import torch

    torch.optim.Adamax([torch.zeros(1, requires_grad=True)])


if __name__ == "__main__":
    main()
