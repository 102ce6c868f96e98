"""Atomic file writes: a temp file beside the target, then ``os.replace`` (never a half-written file)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/lut_tvm/<parts>`` (normally ``~/.cache/lut_tvm/...``): where lut_tvm keeps
    what it measured for this user (tuning logs, the optimizer's measurements)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser().joinpath("lut_tvm", *parts)


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path_beside(path, suffix: str = ".tmp") -> Path:
    """A new, unique, empty file in ``path``'s folder (created) whose mode follows the umask
    (0666 & ~umask, like a plain ``open``; ``tempfile`` makes 0600 files); the caller fills it
    and publishes it with ``os.replace`` or removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``
    atomically, on an exception it is removed (``path`` untouched)."""
    tmp = temp_path_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> Path:
    """``text`` (UTF-8) at ``path``, its folder created; mode from the umask like a plain ``open``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def save_figure(fig, path, dpi: int = 110) -> Path:
    """A matplotlib figure written atomically at ``path`` (format from its suffix), then closed."""
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path


def write_json_atomic(path, payload, indent: int = 1) -> Path:
    """``payload`` as indented JSON at ``path`` (values JSON cannot hold written with ``str``)."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, default=str))
