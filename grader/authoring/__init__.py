"""Instructor tools: `grade new` (scaffold an assignment) and `grade release` (what students get).

- `scaffold`  -- a new assignment that lints and grades its own example at full marks
- `release`   -- starter code (solution blocks stripped) and an offline self-check bundle
- `replay`    -- recording the reference's answers at release time, replaying them in the bundle
"""
