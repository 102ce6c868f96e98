"""The synthetic keyword-spotting set (benchmarks/accuracy/speech.py): shapes, labels, voices, log-mel numerics."""

import shutil
from dataclasses import replace

import numpy as np
import pytest

if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (a benchmark dependency: apt-get install -y espeak-ng)",
                allow_module_level=True)
librosa = pytest.importorskip("librosa", reason="librosa is a benchmark dependency (pip install -e .[bench])")

from benchmarks.accuracy import speech  # noqa: E402

TINY = replace(speech.KwsSettings(), keywords=("yes", "no"), with_unknown=False, with_silence=False,
               train_accents=("en-us",), test_accents=("en-gb",), train_variants=("m1",), test_variants=("f2",),
               train_takes=1, test_takes=1)


@pytest.fixture
def tiny_set(tmp_path, monkeypatch):
    monkeypatch.setenv("LUT_TVM_CACHE", str(tmp_path))
    return speech.load_kws(TINY, log=lambda _msg: None)


def test_shapes_labels_and_disjoint_voices(tiny_set):
    frames = 1 + (TINY.sample_rate - TINY.n_fft) // TINY.hop
    assert tiny_set.x_train.shape == (2, TINY.n_mels, frames) == tiny_set.x_test.shape
    assert tiny_set.x_train.dtype == np.float32 and np.isfinite(tiny_set.x_train).all()
    assert tiny_set.labels == ["yes", "no"]
    assert tiny_set.y_train.tolist() == [0, 1] and tiny_set.y_test.tolist() == [0, 1]
    assert tiny_set.train_voices == ["en-us+m1"] and tiny_set.test_voices == ["en-gb+f2"]
    assert not set(tiny_set.train_voices) & set(tiny_set.test_voices)
    assert not np.allclose(tiny_set.x_train[0], tiny_set.x_train[1])  # two different words


def test_default_voices_disjoint_and_label_order():
    settings = speech.KwsSettings()
    assert not set(settings.voices("train")) & set(settings.voices("test"))
    assert not set(settings.train_accents) & set(settings.test_accents)
    assert not set(settings.train_variants) & set(settings.test_variants)
    assert settings.labels == [*settings.keywords, speech.UNKNOWN, speech.SILENCE]


def test_cache_is_reused_and_keyed_by_settings(tiny_set, tmp_path, monkeypatch):
    monkeypatch.setenv("LUT_TVM_CACHE", str(tmp_path))
    assert tiny_set.path.parent == tmp_path / "kws" and tiny_set.generation_seconds is not None
    again = speech.load_kws(TINY, log=lambda _msg: None)
    assert again.generation_seconds is None and again.path == tiny_set.path
    np.testing.assert_array_equal(again.x_test, tiny_set.x_test)
    version = speech.espeak_version()
    assert speech.cache_path(replace(TINY, seed=1), version) != tiny_set.path


def test_overlapping_voices_are_refused():
    with pytest.raises(ValueError, match=r"overlap: \['en-us\+m1'\]"):
        replace(TINY, test_accents=("en-us",), test_variants=("m1", "f2"))


def test_log_mel_matches_numpy_reference():
    """Hann-windowed frames, |rfft|^2, librosa's mel filterbank, log(+1e-6), all in NumPy."""
    rng = np.random.default_rng(0)
    clip = speech.synthesize("stop", "en-us+m1", 160, 50, TINY.sample_rate)
    length = TINY.sample_rate
    audio = speech.place_and_mix(speech.trim(clip), length, (20.0, 20.0), rng)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(TINY.n_fft) / TINY.n_fft)  # periodic Hann
    starts = np.arange(0, length - TINY.n_fft + 1, TINY.hop)
    frames = np.stack([audio[s: s + TINY.n_fft].astype(np.float64) * window for s in starts])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2                       # [frames, bins]
    bank = librosa.filters.mel(sr=TINY.sample_rate, n_fft=TINY.n_fft, n_mels=TINY.n_mels)
    want = np.log(bank @ power.T + 1e-6)
    got = speech.log_mel(audio[None], TINY)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-4)


def test_trim_and_noise():
    rng = np.random.default_rng(1)
    clip = speech.synthesize("go", "en-gb+m1", 175, 50, TINY.sample_rate)
    trimmed = speech.trim(clip)
    assert 0 < len(trimmed) < len(clip)
    assert abs(trimmed[0]) >= 0.02 * np.abs(clip).max() and abs(trimmed[-1]) >= 0.02 * np.abs(clip).max()
    noise = speech.coloured_noise(4096, rng)
    assert np.mean(noise ** 2) == pytest.approx(1.0, rel=1e-6)
    silence = speech.place_and_mix(None, 4096, (5.0, 30.0), rng)
    assert silence.shape == (4096,) and 0.99e-3 < np.sqrt(np.mean(silence ** 2)) < 0.101  # level 10^U(-3, -1)


def test_bad_wav_is_refused():
    with pytest.raises(speech.DataUnavailable, match="16-bit mono WAV"):
        speech.wav_samples(b"not a wav file at all", "test")
