"""Reference implementations; the standard students are held to. Never imported by the sandboxed child."""
