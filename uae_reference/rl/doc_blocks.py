"""Generated blocks inside the docs: text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

``docs/unified-grpo.md`` quotes command output this way (the evidence tables, the preset
values); the tests compare each block with what the command prints now, and
``--write-doc`` rewrites it.
"""

from __future__ import annotations

import re
from pathlib import Path

from unified_bench.core.errors import ConfigError


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {re.escape(name)}:begin -->\n)(.*?)(<!-- {re.escape(name)}:end -->)", re.S)


def read_block(text: str, name: str) -> str:
    """The generated text of block ``name``."""
    match = _pattern(name).search(text)
    if match is None:
        raise ConfigError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> block in the document")
    return match.group(2)


def write_block(path: str | Path, name: str, content: str) -> None:
    """Replace block ``name`` of the file at ``path`` with ``content``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    read_block(text, name)  # fails clearly when the markers are missing
    path.write_text(_pattern(name).sub(lambda m: m.group(1) + content + m.group(3), text, count=1), encoding="utf-8")
