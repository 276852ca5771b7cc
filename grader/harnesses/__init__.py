"""Grader-side code that runs *inside* the sandboxed child, next to the student's module.

A harness is `fn(module, device, **kwargs) -> plain data` (dicts/lists of numbers, strings and
numpy arrays), called through `CheckContext.harness("<module>.<fn>", ...)`. Typical use: train a
student's model with the course's own loop and return its loss history and weights, which the
grader then evaluates with reference code. Harnesses must hold no solution code (the child can
read them) and must not trust anything the student returns beyond turning it into arrays.
"""
