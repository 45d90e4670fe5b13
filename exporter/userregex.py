"""Regular expressions written by users outside rule files (``discovery.name_regex``).

They run on RE2, the linear-time engine the rules use: a crafted job name cannot make
matching take longer than a scan of the name, whatever the pattern. RE2 has no
look-around and no back-references; a pattern using them is refused when the
configuration is loaded, with the reason (https://github.com/google/re2/wiki/Syntax).
"""

from __future__ import annotations

from typing import Any

import re2

MAX_PATTERN_LENGTH = 4096


def compile_user_regex(pattern: str) -> Any:
    """``pattern`` compiled with RE2 (UTF-8; ``search`` finds it anywhere in the text).

    Raises ValueError with a one-line reason a user can act on.
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"invalid regular expression: longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else b""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        detail = " ".join(str(detail).split()) or "invalid pattern"
        raise ValueError(
            f"invalid regular expression: {detail} (RE2 syntax: no look-around or back-references)"
        ) from None
