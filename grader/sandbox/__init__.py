"""The boundary between the grader and untrusted student code.

Student code runs in a child process forked from a warm template process (the *zygote*, which
has torch and numpy imported but never `reference`, the rubric or the checks). The grader talks
to the child over a socket with `protocol` messages: JSON plus raw numpy buffers, never pickles.
Every comparison happens on the grader's side.

- `protocol`  -- encoding of messages (plain data and arrays only)
- `nets`      -- small networks built from a data spec (same spec on both sides)
- `child`     -- what runs in the child: load the submission, answer `call` requests
- `zygote`    -- the template process that forks children
- `client`    -- the grader's handle on one submission's child: `Sandbox`
"""
