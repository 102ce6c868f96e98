"""Recipes: both beat k-means-only accuracy on the digits CNN; checkpoints resume exactly and are
written atomically."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lut_tvm.errors import LutTvmError
from lut_tvm.policy import PlanPolicy
from lut_tvm.train import (LutConfig, accuracy, convert, kmeans_baseline, low_data_subset,
                           lut_layers, train_lutnn, train_reconstruction)
from lut_tvm.train import recipes

MIN_GAIN = 0.05  # learned centroids must beat k-means by 5 points (measured: ~20)


def test_lutnn_recipe_beats_kmeans(digits, digits_cnn, kmeans_cnn, fresh_kmeans_cnn):
    x_train, x_test, y_train, y_test = digits
    kmeans_acc = accuracy(kmeans_cnn, (x_test, y_test))
    history = train_lutnn(fresh_kmeans_cnn, digits_cnn, (x_train, y_train), epochs=2, lr=3e-3, seed=0,
                          eval_data=(x_test, y_test))
    learned_acc = accuracy(fresh_kmeans_cnn, (x_test, y_test))
    assert history[-1]["test_acc"] == learned_acc
    assert learned_acc > kmeans_acc + MIN_GAIN, (kmeans_acc, learned_acc)
    assert not fresh_kmeans_cnn.training  # returned in eval mode: LUT layers run hard


def test_learning_only_centroids_and_temperatures_beats_kmeans(digits, digits_cnn, kmeans_cnn,
                                                               fresh_kmeans_cnn):
    """The gain comes from the LUT layers' soft-path gradients, not from retraining dense layers."""
    x_train, x_test, y_train, y_test = digits
    kmeans_acc = accuracy(kmeans_cnn, (x_test, y_test))
    weights = {k: v.clone() for k, v in fresh_kmeans_cnn.state_dict().items()
               if not k.endswith(("centroids", "log_temperature"))}
    train_lutnn(fresh_kmeans_cnn, digits_cnn, (x_train, y_train), epochs=1, lr=1e-2, train_weights=False,
                seed=0)
    learned_acc = accuracy(fresh_kmeans_cnn, (x_test, y_test))
    assert learned_acc > kmeans_acc + MIN_GAIN, (kmeans_acc, learned_acc)
    state = fresh_kmeans_cnn.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    moved = [name for name, layer in lut_layers(fresh_kmeans_cnn)
             if float(layer.temperature) != float(dict(lut_layers(kmeans_cnn))[name].temperature)]
    assert moved == [name for name, _ in lut_layers(kmeans_cnn)]  # every temperature was learned


def test_reconstruction_recipe_beats_kmeans_on_5_percent_of_the_data(digits, digits_cnn, kmeans_cnn,
                                                                     fresh_kmeans_cnn):
    x_train, x_test, y_train, y_test = digits
    kmeans_acc = accuracy(kmeans_cnn, (x_test, y_test))
    teacher_before = copy.deepcopy(digits_cnn.state_dict())
    first_conv = fresh_kmeans_cnn[0].weight.detach().clone()
    train_reconstruction(fresh_kmeans_cnn, digits_cnn, (x_train, y_train), fraction=0.05, epochs=10,
                         lr=1e-2, seed=0)
    learned_acc = accuracy(fresh_kmeans_cnn, (x_test, y_test))
    assert learned_acc > kmeans_acc + MIN_GAIN, (kmeans_acc, learned_acc)
    # only the LUT layers were trained; the teacher is untouched; no hook is left behind
    assert torch.equal(fresh_kmeans_cnn[0].weight, first_conv)
    for key, value in digits_cnn.state_dict().items():
        assert torch.equal(value, teacher_before[key])
    assert all(not l._forward_hooks and not l._forward_pre_hooks for _, l in lut_layers(fresh_kmeans_cnn))


def test_low_data_subset_is_seeded_and_sized(digits):
    x_train, _, y_train, _ = digits
    x_a, y_a = low_data_subset((x_train, y_train), 0.05, seed=1)
    x_b, _ = low_data_subset((x_train, y_train), 0.05, seed=1)
    x_c, _ = low_data_subset((x_train, y_train), 0.05, seed=2)
    assert len(x_a) == round(0.05 * len(x_train)) == len(y_a)
    assert np.array_equal(x_a, x_b) and not np.array_equal(x_a, x_c)
    with pytest.raises(LutTvmError, match="fraction"):
        low_data_subset((x_train, y_train), 0.0, seed=1)


def test_kmeans_baseline_is_convert_in_eval_mode(digits, digits_cnn, kmeans_cnn):
    baseline = kmeans_baseline(digits_cnn, LutConfig(policy=PlanPolicy(max_rows=2048, seed=0)), digits[0])
    assert not baseline.training
    for (name, a), (_, b) in zip(lut_layers(baseline), lut_layers(kmeans_cnn)):
        assert torch.equal(a.centroids, b.centroids), name


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def mlp_setup(digits):
    flat = [a.reshape(len(a), -1) if a.ndim == 4 else a for a in digits]
    torch.manual_seed(4)
    teacher = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    lut = convert(teacher.eval(), LutConfig(policy=PlanPolicy(max_rows=512)), flat[0])
    return teacher, lut, (flat[0][:300], flat[2][:300])


RECIPES = {
    "lutnn": lambda lut, teacher, data, **kw: train_lutnn(lut, teacher, data, lr=3e-3, **kw),
    "reconstruction": lambda lut, teacher, data, **kw: train_reconstruction(
        lut, teacher, data, fraction=0.5, lr=3e-3, **kw),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resumed_run_ends_where_an_uninterrupted_one_does(recipe, mlp_setup, tmp_path):
    teacher, lut, data = mlp_setup
    run = RECIPES[recipe]
    straight = copy.deepcopy(lut)
    history = run(straight, teacher, data, epochs=3, seed=7)

    ckpt = tmp_path / "ckpt.pt"
    run(copy.deepcopy(lut), teacher, data, epochs=1, seed=7, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    # as a new process would: rebuild the model from scratch, then resume from the checkpoint
    restarted = copy.deepcopy(lut)
    resumed_history = run(restarted, teacher, data, epochs=3, seed=7, checkpoint=ckpt)
    assert resumed_history == history
    for key, value in straight.state_dict().items():
        assert torch.equal(value, restarted.state_dict()[key]), key
    assert not torch.equal(restarted.state_dict()["0.centroids"], lut.state_dict()["0.centroids"])
    # finished: calling again trains nothing and changes nothing
    again = copy.deepcopy(lut)
    assert run(again, teacher, data, epochs=3, seed=7, checkpoint=ckpt) == history
    assert torch.equal(again.state_dict()["0.centroids"], straight.state_dict()["0.centroids"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp files left


def test_checkpoint_of_other_settings_is_refused(mlp_setup, tmp_path):
    teacher, lut, data = mlp_setup
    ckpt = tmp_path / "ckpt.pt"
    train_lutnn(copy.deepcopy(lut), teacher, data, epochs=1, seed=0, checkpoint=ckpt)
    with pytest.raises(LutTvmError, match="settings"):
        train_lutnn(copy.deepcopy(lut), teacher, data, epochs=2, seed=1, checkpoint=ckpt)
    with pytest.raises(LutTvmError, match="recipe 'lutnn'"):
        train_reconstruction(copy.deepcopy(lut), teacher, data, epochs=2, seed=0, checkpoint=ckpt)


def test_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt.pt"
    recipes.save_checkpoint(ckpt, {"epoch": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(recipes.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        recipes.save_checkpoint(ckpt, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
