"""The warm template process: imports torch and numpy once, then forks one child per request.

Started by `client.Zygote` as `python -m grader.sandbox.zygote FD`. Forking it costs milliseconds,
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
    import numpy  # noqa: F401  (preloaded for every child)
    import torch  # noqa: F401

    from grader.sandbox import child

    # Creating the first optimiser imports torch._dynamo (~2.5 s): pay it once here, not per child.
    torch.optim.Adamax([torch.zeros(1, requires_grad=True)])

    try:
        from grader import training  # noqa: F401  (harness only: the training loop children run)
    except ImportError:
        pass

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
        except OSError:
            return
        if not msg:
            return
        config = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            ctl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            child.run(fds, config)  # never returns
        for fd in fds:
            os.close(fd)
        ctl.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    main()
