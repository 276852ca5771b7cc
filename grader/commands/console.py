"""The terminal output of the `grade` commands: rich, imported on first use.

`grade run` and `grade check` start the sandbox (which imports torch on the other core) before
anything else; importing rich at start-up would delay that start for nothing.
"""

from __future__ import annotations


class _LazyConsole:
    """Stands for `rich.console.Console(highlight=False, soft_wrap=True)`, created on first attribute access.

    soft_wrap: rich never breaks a line itself (the terminal does, visually), so a long path stays one word in
    a terminal's copy and in a log (rich folds words longer than 80 columns when output is not a terminal)."""

    _console = None

    def real(self):
        """The rich Console itself (for rich objects that take one, e.g. Progress(console=...))."""
        if _LazyConsole._console is None:
            from rich.console import Console

            _LazyConsole._console = Console(highlight=False, soft_wrap=True)
        return _LazyConsole._console

    def __getattr__(self, name):
        return getattr(self.real(), name)

    def __enter__(self):
        return self.real().__enter__()

    def __exit__(self, *exc):
        return self.real().__exit__(*exc)


console = _LazyConsole()


def escape(text: str) -> str:
    """rich.markup.escape."""
    from rich.markup import escape as _escape

    return _escape(text)


def Table(*args, **kwargs):  # noqa: N802  (stands for the class rich.table.Table)
    from rich.table import Table as _Table

    return _Table(*args, **kwargs)


def shown(text) -> str:
    """Student-controlled text (a folder name, a message that quotes one) as rich markup that prints exactly
    that text: markup escaped ("[/]" would crash the print, "[link=…]" plant a link) and control and bidi
    characters written as \\x1b, \\u202e (an ESC sequence would retitle or clear the TA's terminal, forge a
    line of the log; a right-to-left override would show another name)."""
    import unicodedata

    text = str(text)
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        text = "".join(c if unicodedata.category(c) not in ("Cc", "Cf") else
                       (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)
    return escape(text)
