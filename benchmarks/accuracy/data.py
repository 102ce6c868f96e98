"""Offline data for the accuracy benchmark: Debian packages unpacked into a cache, and loaders.

``debian_package(name)`` runs ``apt-get download NAME`` and ``dpkg-deb -x`` into
``$LUT_TVM_CACHE`` (default ``~/.cache/lut_tvm``)``/debian/NAME`` once, and reuses that tree
afterwards. When that cannot be done (no apt-get, no package lists, no network to the
Debian mirror) it raises ``DataUnavailable`` saying what failed and what to run by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


class DataUnavailable(RuntimeError):
    """A data set or model could not be obtained offline; the message says why and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("LUT_TVM_CACHE", Path.home() / ".cache" / "lut_tvm"))


def _run(cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def debian_package(name: str, wanted: str) -> Path:
    """The unpacked root of Debian package ``name`` (cached); ``wanted`` is a path inside it that must exist."""
    root = cache_dir() / "debian" / name
    if (root / wanted).exists():
        return root
    installed = Path("/") / wanted
    if installed.exists():  # the package is installed system-wide
        return Path("/")
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataUnavailable(f"cannot get Debian package {name!r}: {tool} is not on PATH "
                                  f"(needed: apt-get download {name} && dpkg-deb -x <deb> {root})")
    with tempfile.TemporaryDirectory() as tmp:
        got = _run(["apt-get", "download", name], cwd=tmp)
        if got.returncode != 0 and os.geteuid() == 0:  # stale or missing package lists: refresh once
            _run(["apt-get", "update"])
            got = _run(["apt-get", "download", name], cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if got.returncode != 0 or not debs:
            raise DataUnavailable(f"cannot download Debian package {name!r} (apt-get download exit "
                                  f"{got.returncode}: {got.stderr.strip()[-300:]}). Run `apt-get update && "
                                  f"apt-get download {name}` and `dpkg-deb -x {name}_*.deb {root}` by hand.")
        staging = Path(tempfile.mkdtemp(dir=cache_dir().mkdir(parents=True, exist_ok=True) or cache_dir()))
        unpacked = _run(["dpkg-deb", "-x", str(debs[0]), str(staging)])
        if unpacked.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise DataUnavailable(f"dpkg-deb -x {debs[0].name} failed: {unpacked.stderr.strip()[-300:]}")
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    if not (root / wanted).exists():
        raise DataUnavailable(f"Debian package {name!r} has no {wanted}")
    return root


# ------------------------------------------------------------------ OpenCV digits.png

DIGITS_PNG = "usr/share/doc/opencv-doc/examples/data/digits.png"


def load_opencv_digits() -> tuple[np.ndarray, np.ndarray, Path]:
    """OpenCV's 5,000 handwritten digits: ``x [5000, 1, 20, 20]`` float32 in [0, 1], ``y [5000]``, the file.

    digits.png is 100 x 50 cells of 20 x 20 pixels; each block of 5 cell rows is one digit (0..9).
    """
    from PIL import Image  # pylint: disable=import-outside-toplevel

    path = debian_package("opencv-doc", DIGITS_PNG) / DIGITS_PNG
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    if image.shape != (1000, 2000):
        raise DataUnavailable(f"{path} is {image.shape}, not the 1000 x 2000 digits sheet")
    cells = image.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 1, 20, 20)
    labels = np.repeat(np.arange(10), 500)
    return np.ascontiguousarray(cells), labels, path


# ------------------------------------------------------------------ Debian fortunes

FORTUNES_DIR = "usr/share/games/fortunes"
# Ten topic files of Debian's `fortunes` (file name = topic), each with ~150 or more fortunes.
FORTUNE_TOPICS = ("computers", "science", "politics", "sports", "food", "law", "drugs",
                  "startrek", "love", "education")


def read_fortunes(path: Path) -> list[str]:
    """The fortunes of one strfile source file (entries separated by lines holding only ``%``)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    entries = [re.sub(r"\s+", " ", entry).strip() for entry in re.split(r"^%\s*$", text, flags=re.M)]
    return [e for e in entries if len(e) >= 20]


def load_fortunes(topics=FORTUNE_TOPICS, per_topic: int = 200, test_fraction: float = 1 / 3, seed: int = 0):
    """``(train_texts, train_topics, test_texts, test_topics, topic_names, source dir)``: at most
    ``per_topic`` fortunes of each topic file (seeded pick), split per topic (held-out test)."""
    root = debian_package("fortunes", f"{FORTUNES_DIR}/computers") / FORTUNES_DIR
    rng = np.random.default_rng(seed)
    train, test = ([], []), ([], [])
    for label, topic in enumerate(topics):
        entries = read_fortunes(root / topic)
        if len(entries) < 30:
            raise DataUnavailable(f"fortune file {root / topic} has only {len(entries)} fortunes")
        picked = [entries[i] for i in rng.permutation(len(entries))[:per_topic]]
        cut = int(round(len(picked) * (1 - test_fraction)))
        train[0].extend(picked[:cut])
        train[1].extend([label] * cut)
        test[0].extend(picked[cut:])
        test[1].extend([label] * (len(picked) - cut))
    return (train[0], np.asarray(train[1]), test[0], np.asarray(test[1]), list(topics), root)


COMMON_LICENSES = "usr/share/common-licenses"


def license_paragraphs(root: Path) -> list[str]:
    """Paragraphs (blank-line separated, >= 40 characters, whitespace collapsed) of the license texts in ``root``."""
    paragraphs = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.is_symlink()):
        text = path.read_text(encoding="utf-8", errors="replace")
        paragraphs.extend(re.sub(r"\s+", " ", part).strip() for part in re.split(r"\n\s*\n", text))
    return [p for p in paragraphs if len(p) >= 40]


def load_distillation_texts(exclude, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """Unlabelled text for distilling hidden states: every fortune of every file of Debian's
    ``fortunes`` (offensive ``off/`` files left out) and the paragraphs of ``/usr/share/common-licenses``
    (``base-files``), deduplicated, minus every text in ``exclude`` (the held-out texts), in a seeded
    order, at most ``limit``. Returns ``(texts, sources)``; the source files are cached like the others."""
    root = debian_package("fortunes", f"{FORTUNES_DIR}/computers") / FORTUNES_DIR
    texts = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.suffix and not p.is_symlink()):
        texts.extend(read_fortunes(path))
    sources = [str(root)]
    licenses = Path("/") / COMMON_LICENSES
    if licenses.is_dir():
        texts.extend(license_paragraphs(licenses))
        sources.append(str(licenses))
    banned = set(exclude)
    unique = sorted({t for t in texts if t not in banned})
    order = np.random.default_rng(seed).permutation(len(unique))
    picked = [unique[i] for i in order]
    return (picked if limit is None else picked[:limit]), sources


# ------------------------------------------------------------------ MNIST-1D


def load_mnist1d(seed: int = 42):
    """MNIST-1D generated locally (``mnist1d.data.make_dataset``, the published default arguments:
    5,000 length-40 signals, 4,000 train / 1,000 test): ``(x_train, y_train, x_test, y_test)``, NCL."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise DataUnavailable("the `mnist1d` package is not installed (pip install -e .[bench])") from err
    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    as_ncl = lambda a: np.asarray(a, dtype=np.float32)[:, None, :]  # noqa: E731
    return as_ncl(data["x"]), np.asarray(data["y"]), as_ncl(data["x_test"]), np.asarray(data["y_test"])
