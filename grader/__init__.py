"""gradekit: grades deep-generative-model homework against reference implementations.

Importing this package must stay cheap and must never import `reference` or the checks:
the sandbox's pre-imported template process imports `grader.sandbox.*` only.
"""

__version__ = "0.1.0"
