"""Files written whole or not at all."""

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "write_text_atomic"]


def write_atomic(path, fill, binary=False):
    """Write `path` (its folder made if missing) through a temporary file beside it: `fill(f)` writes the content
    to the open temporary (text, or bytes with `binary`), which is then renamed over `path`: a reader sees the old
    file or the new one, never a part, and a failure leaves no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            fill(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)          # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text):
    """`write_atomic` of a text."""
    write_atomic(path, lambda f: f.write(text))
