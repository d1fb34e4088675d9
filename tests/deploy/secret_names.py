"""What counts as a secret in deployment files: the names that must never carry a literal value."""

from __future__ import annotations

import re

_SECRET_NAME = re.compile(r"(^|_)(PASSWORD|PASSWD|SECRET|TOKEN|DATABASE_URL|KEY)$|DSN", re.IGNORECASE)
# scheme://user:password@host: credentials written into a URL.
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)


def is_secret_like(name: str) -> bool:
    """`*_PASSWORD`, `*_SECRET`, `*_TOKEN`, `*_DATABASE_URL`, `*_KEY` and DSNs; a `*_FILE` name holds a path."""
    return bool(_SECRET_NAME.search(name.replace("-", "_")))
