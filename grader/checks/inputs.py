"""Where each check's inputs come from: a per-run secret the student's code never sees.

Every check draws its inputs (arrays, network weights, the seed of the student's initialisation)
from `CheckContext.rng` / `CheckContext.seed`, derived here from the check's id and a secret made
for each grading run. While one check runs, the student's other components are stand-ins that
answer with the reference's values (grader/checks/standins.py); with inputs known in advance, a
student could ask them for the answers to the later checks' inputs and replay them. Derived from
a secret the child never sees, those inputs cannot be known before their check sends them, so a
harvested answer is worthless.

The secret is recorded in results.json (`extra_data.gradekit.inputs_secret`); grading again with
it (`grade run --seed SECRET`) draws the same inputs and so gives the same grade. It never reaches
the child: not in its environment or argv (a zygote is spawned afresh when the command line holds
`--seed`, grader.sandbox.client._fork_here_is_safe), not in a file it can see, and it is made
after the zygote was forked off the grading process (so not in the child's memory either).

`PUBLISHED` ("") is the fixed, public derivation (the check id only): the self-check bundles
record and replay the public checks' answers on those inputs, which students may know anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PUBLISHED = ""
_HEX = re.compile(r"[0-9a-f]{32,128}")


def new_secret() -> str:
    """A fresh secret for one grading run (128 bits, hex)."""
    return secrets.token_hex(16)


def check_secret(text: str) -> str:
    """`text` as a secret (lower-case hex, 32 to 128 digits); ValueError saying what is expected otherwise."""
    value = str(text).strip().lower()
    if value != PUBLISHED and not _HEX.fullmatch(value):
        raise ValueError("the seed must be the 32-hex-digit `inputs_secret` of a results.json "
                         "(extra_data.gradekit.inputs_secret)")
    return value


def check_seed(secret: str, check_id: str) -> int:
    """The 32-bit seed of check `check_id`'s inputs: HMAC-SHA256(secret, id), or sha256(id) for PUBLISHED.
    One check's seed says nothing about another's without the secret."""
    data = check_id.encode()
    digest = hmac.new(secret.encode(), data, hashlib.sha256).digest() if secret else hashlib.sha256(data).digest()
    return int.from_bytes(digest[:4], "little")
