"""Synthetic keyword-spotting data: keywords spoken by espeak-ng, augmented, as log-mel spectrograms (cached).

Every clip is SYNTHETIC speech: ``espeak-ng`` says one word with one *voice* (an English accent
such as ``en-gb-scotland`` plus a voice variant such as ``+m3`` or ``+croak``) at a seeded speed
(``-s``) and pitch (``-p``). Voices are split between train and test with *both* parts disjoint:
the test set's accents and variants never occur in training (``KwsSettings.train_accents`` /
``test_accents``, ``train_variants`` / ``test_variants``). Each utterance is trimmed of silence,
placed at a random offset in a 1-second window (time-shift augmentation) and mixed with coloured
noise at a seeded SNR. Classes are the keywords, then ``_unknown_`` (other words, as in Speech
Commands) and ``_silence_`` (noise only) when enabled.

Features are log-mel spectrograms ``[n_mels, frames]`` (``librosa.feature.melspectrogram``, natural
log of power + 1e-6). A generated set is cached under ``$LUT_TVM_CACHE/kws/`` (default
``~/.cache/lut_tvm/kws/``), keyed by a hash of the settings and the espeak-ng version, written
atomically by ``lut_tvm.npz_meta``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lut_tvm.npz_meta import read_npz_with_meta, write_npz_with_meta

from .data import DataUnavailable, cache_dir

FORMAT = "lut_tvm.kws_dataset"
VERSION = 1
UNKNOWN, SILENCE = "_unknown_", "_silence_"
INSTALL_HINT = "apt-get install -y espeak-ng"


@dataclass(frozen=True)
class KwsSettings:
    """Everything that decides the generated set (its hash names the cache file)."""

    keywords: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    unknown_words: tuple[str, ...] = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila",
                                      "tree", "wow", "zero", "one", "two", "three", "four", "five", "six",
                                      "seven", "eight", "nine")
    with_unknown: bool = True
    with_silence: bool = True
    train_accents: tuple[str, ...] = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029")
    test_accents: tuple[str, ...] = ("en-us-nyc", "en-gb-x-gbcwmd")
    train_variants: tuple[str, ...] = ("m1", "m2", "m4", "m5", "m7", "m8", "f1", "f3", "f5", "croak", "klatt",
                                       "klatt2", "Annie", "Denis", "Gene", "linda", "quincy", "robert")
    test_variants: tuple[str, ...] = ("m3", "m6", "f2", "f4", "klatt4", "Andy")
    speeds: tuple[int, int] = (130, 220)        # words per minute, uniform
    pitches: tuple[int, int] = (25, 75)         # espeak-ng -p, uniform
    train_takes: int = 3                        # utterances per (voice, class), each its own speed/pitch
    test_takes: int = 7                         # (fewer test voices: more takes each)
    snr_db: tuple[float, float] = (5.0, 30.0)   # background noise, uniform
    clip_seconds: float = 1.0
    sample_rate: int = 22050                    # espeak-ng's output rate
    n_mels: int = 40
    n_fft: int = 1024
    hop: int = 441                              # 20 ms: 48 frames per 1-s clip (no centring)
    seed: int = 0

    def __post_init__(self):
        shared = set(self.voices("train")) & set(self.voices("test"))
        if shared:
            raise ValueError(f"KwsSettings: train and test voices overlap: {sorted(shared)}")
        if not self.keywords or self.train_takes < 1 or self.test_takes < 1:
            raise ValueError("KwsSettings: needs at least one keyword and train_takes, test_takes >= 1")

    def key(self, espeak_version: str) -> str:
        blob = json.dumps({**asdict(self), "espeak": espeak_version, "v": VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def labels(self) -> list[str]:
        return [*self.keywords, *([UNKNOWN] if self.with_unknown else []), *([SILENCE] if self.with_silence else [])]

    def voices(self, split: str) -> list[str]:
        """espeak-ng voice names ``accent+variant`` of ``split`` ("train" or "test")."""
        accents, variants = ((self.train_accents, self.train_variants) if split == "train"
                             else (self.test_accents, self.test_variants))
        return [f"{accent}+{variant}" for accent in accents for variant in variants]


@dataclass
class KwsData:
    x_train: np.ndarray   # [N, n_mels, frames] float32 log-mel
    y_train: np.ndarray   # [N] int64, index into labels
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    train_voices: list[str]
    test_voices: list[str]
    path: Path            # the cache file
    generation_seconds: float | None  # None when loaded from the cache


def espeak_version() -> str:
    """``espeak-ng --version``'s first line; ``DataUnavailable`` with the install command if missing."""
    if shutil.which("espeak-ng") is None:
        raise DataUnavailable(f"espeak-ng is not installed (synthesizes the keyword-spotting set): {INSTALL_HINT}")
    done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DataUnavailable(f"espeak-ng --version failed ({done.stderr.strip()[-200:]}); reinstall: {INSTALL_HINT}")
    return done.stdout.strip().splitlines()[0]


def wav_samples(blob: bytes, where: str) -> tuple[np.ndarray, int]:
    """float32 samples in [-1, 1] and the rate of espeak-ng's 16-bit mono WAV on stdout (its sizes are bogus)."""
    data = blob.find(b"data")
    mono_16bit = int.from_bytes(blob[22:24], "little") == 1 and int.from_bytes(blob[34:36], "little") == 16
    if blob[:4] != b"RIFF" or data < 0 or not mono_16bit:
        raise DataUnavailable(f"{where}: espeak-ng did not write a 16-bit mono WAV ({len(blob)} bytes)")
    rate = int.from_bytes(blob[24:28], "little")
    payload = blob[data + 8:]
    return np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, rate


def synthesize(word: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """One utterance of ``word`` by espeak-ng ``voice`` as float32 samples at ``sample_rate``."""
    where = f"espeak-ng -v {voice} -s {speed} -p {pitch} {word!r}"
    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                          capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise DataUnavailable(f"{where} failed (exit {done.returncode}): {done.stderr.decode()[-200:]}")
    samples, rate = wav_samples(done.stdout, where)
    if rate != sample_rate:
        raise DataUnavailable(f"{where}: sample rate {rate}, settings expect {sample_rate}")
    if not np.abs(samples).max(initial=0.0) > 0:
        raise DataUnavailable(f"{where}: silent output (is voice {voice!r} installed?)")
    return samples


def trim(samples: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """``samples`` without the leading and trailing stretch below ``threshold`` of the peak."""
    loud = np.flatnonzero(np.abs(samples) >= threshold * np.abs(samples).max())
    return samples[loud[0]: loud[-1] + 1]


def coloured_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise whose spectrum falls as ``f^-beta`` with a random ``beta`` in [0, 2] (white..brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    spectrum[1:] /= freqs[1:] ** (rng.uniform(0.0, 2.0) / 2)
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, length)
    return noise / np.sqrt(np.mean(noise ** 2) + 1e-12)


def place_and_mix(speech: np.ndarray | None, length: int, snr_db: tuple[float, float],
                  rng: np.random.Generator) -> np.ndarray:
    """A ``length``-sample clip: ``speech`` at a random offset (centre-cropped if longer) plus noise at a
    random SNR; ``speech=None`` gives a noise-only clip at a random level."""
    clip = np.zeros(length, np.float32)
    if speech is None:
        return (coloured_noise(length, rng) * 10 ** rng.uniform(-3.0, -1.0)).astype(np.float32)
    if len(speech) > length:
        start = (len(speech) - length) // 2
        speech = speech[start: start + length]
    offset = int(rng.integers(0, length - len(speech) + 1))
    clip[offset: offset + len(speech)] = speech * rng.uniform(0.3, 1.0)
    power = np.mean(clip[offset: offset + len(speech)] ** 2) + 1e-12
    noise_power = power / 10 ** (rng.uniform(*snr_db) / 10)
    return (clip + coloured_noise(length, rng) * np.sqrt(noise_power)).astype(np.float32)


def log_mel(clips: np.ndarray, settings: KwsSettings) -> np.ndarray:
    """``[N, n_mels, frames]`` float32 ``log(mel power + 1e-6)`` of ``[N, samples]`` clips (librosa)."""
    try:
        import librosa  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise DataUnavailable("the `librosa` package is not installed (pip install -e .[bench])") from err
    mel = librosa.feature.melspectrogram(y=np.ascontiguousarray(clips, dtype=np.float32), sr=settings.sample_rate,
                                         n_fft=settings.n_fft, hop_length=settings.hop, center=False,
                                         n_mels=settings.n_mels, window="hann", power=2.0)
    return np.log(mel + 1e-6).astype(np.float32)


def _jobs(settings: KwsSettings, split: str, rng: np.random.Generator) -> list[tuple[int, str | None, str, int, int]]:
    """``(label, word or None for silence, voice, speed, pitch)`` of every clip of ``split``, seeded."""
    jobs = []
    for voice in settings.voices(split):
        for label, name in enumerate(settings.labels):
            for _ in range(settings.train_takes if split == "train" else settings.test_takes):
                speed = int(rng.integers(*settings.speeds, endpoint=True))
                pitch = int(rng.integers(*settings.pitches, endpoint=True))
                word = (None if name == SILENCE else
                        str(rng.choice(settings.unknown_words)) if name == UNKNOWN else name)
                jobs.append((label, word, voice, speed, pitch))
    return jobs


def generate_split(settings: KwsSettings, split: str, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` of one split (espeak-ng calls in ``workers`` threads; augmentation seeded)."""
    rng = np.random.default_rng([settings.seed, 0 if split == "train" else 1])
    jobs = _jobs(settings, split, rng)
    words = sorted({(word, voice, speed, pitch) for _, word, voice, speed, pitch in jobs if word is not None})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        speech = dict(zip(words, pool.map(lambda w: trim(synthesize(*w, settings.sample_rate)), words)))
    length = int(round(settings.clip_seconds * settings.sample_rate))
    clips = np.stack([place_and_mix(None if word is None else speech[(word, voice, speed, pitch)], length,
                                    settings.snr_db, rng) for _, word, voice, speed, pitch in jobs])
    return log_mel(clips, settings), np.asarray([job[0] for job in jobs], dtype=np.int64)


def cache_path(settings: KwsSettings, version: str) -> Path:
    return cache_dir() / "kws" / f"kws-{settings.key(version)}.npz"


def load_kws(settings: KwsSettings | None = None, log=print) -> KwsData:
    """The keyword-spotting set for ``settings`` from the cache, generating and caching it first if needed."""
    settings = settings or KwsSettings()
    version = espeak_version()
    path = cache_path(settings, version)
    seconds = None
    if path.is_file():
        arrays, _ = read_npz_with_meta(path, f"kws cache file {str(path)!r}", FORMAT, VERSION)
        log(f"  kws: loaded cached synthetic set {path}")
    else:
        start = time.perf_counter()
        (x_train, y_train), (x_test, y_test) = (generate_split(settings, split) for split in ("train", "test"))
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        write_npz_with_meta(path, arrays, {"format": FORMAT, "version": VERSION, "espeak": version,
                                           "settings": asdict(settings)})
        seconds = round(time.perf_counter() - start, 1)
        log(f"  kws: synthesized {len(y_train)} train / {len(y_test)} test clips in {seconds:.0f} s -> {path}")
    return KwsData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], settings.labels,
                   settings.voices("train"), settings.voices("test"), path, seconds)

