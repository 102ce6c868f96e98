"""A tiny random BERT (MiniLM's own classes, packed float input) through ``lut_tvm.optimize`` with the
cosine metric: the chosen plan, compiled, stays within the budget by an independent NumPy cosine."""

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def tiny_encoder():
    from transformers import BertConfig, BertModel

    from benchmarks.accuracy.tasks.minilm import PooledEncoder

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, attn_implementation="eager")
    return PooledEncoder(BertModel(config)).eval()


def packed(count, length, seed):
    """``[count, 2, length]`` float token ids (random real lengths >= 3) and attention masks."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 64, (count, length))
    mask = np.zeros((count, length))
    for row, real in enumerate(rng.integers(3, length + 1, count)):
        mask[row, :real] = 1
    return np.stack([ids * mask, mask], 1).astype(np.float32)


def test_tiny_bert_optimize_meets_the_cosine_budget(tmp_path):
    import lut_tvm

    encoder = tiny_encoder()
    calibration, x_eval = packed(32, 8, seed=1), packed(24, 8, seed=2)
    linears = [n for n, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)]
    budget = 5.0
    result = lut_tvm.optimize(encoder, calibration, x_eval, budget=budget, metric="cosine", batch=1,
                              layers=linears, sub_lens=(8,), cache_dir=tmp_path, timing_number=2,
                              timing_repeat=2)
    assert set(result.choice) <= set(linears)
    with torch.no_grad():
        reference = encoder(torch.from_numpy(x_eval)).numpy().astype(np.float64)
    compiled = lut_tvm.compile(encoder, result.plan if result.choice else None, example_inputs=(x_eval[:1],))
    got = np.concatenate([compiled(x_eval[i:i + 1]) for i in range(len(x_eval))]).astype(np.float64)
    cosine = (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.mean() * 100 >= 100 - budget - 1e-6
    assert result.report["chosen_metric_compiled"] == pytest.approx(cosine.mean() * 100, abs=1e-3)


def test_pooled_encoder_trim_does_not_change_the_embedding():
    encoder = tiny_encoder()
    x = torch.from_numpy(packed(6, 8, seed=3))
    x[:, :, -2:] = 0  # two all-padding columns: the eager forward trims them
    with torch.no_grad():
        trimmed = encoder(x).numpy()
        encoder.trim = False
        whole = encoder(x).numpy()
    np.testing.assert_allclose(trimmed, whole, atol=1e-5)


def test_frozen_lut_forward_equals_the_hard_forward():
    from lut_tvm.optimizer.evaluate import lut_modules
    from lut_tvm.plan import LayerPlan, Plan, TableQuant
    from lut_tvm.weights import LayerKind, fingerprint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24))
    x = torch.randn(50, 16)
    for sub_len in (2, 8):
        centroids = np.random.default_rng(sub_len).normal(size=(16 // sub_len, 16, sub_len)).astype(np.float32)
        for quant in (TableQuant.INT8_PER_LAYER, TableQuant.INT8_PER_COLUMN):
            weight = model[0].weight.detach().numpy().T
            plan = Plan([LayerPlan("0", LayerKind.DENSE, weight.shape, fingerprint(weight), centroids,
                                   table_quant=quant)])
            with torch.no_grad():
                hard = lut_modules(model, plan)["0"](x)
                frozen = lut_modules(model, plan, frozen=True)["0"](x)
            assert torch.equal(hard, frozen)
            assert not torch.allclose(hard, model(x), atol=1e-6)  # a LUT, not the dense layer


def test_greedy_prune_skips_only_what_cannot_fit_and_finds_the_same_plan():
    from lut_tvm.optimizer.search import Candidate, greedy_search

    alone = {("a", 2): 1.0, ("b", 2): 2.5, ("c", 2): 0.4, ("c", 4): 3.0, ("d", 2): 4.5}
    calls = {"plain": 0, "pruned": 0}

    def loss_of(kind):
        def loss(choice):  # additive losses: pruning is exact here
            calls[kind] += 1
            return sum(alone[(n, v)] for n, v in choice.items())
        return loss

    def candidates():
        return [Candidate(n, v, saving_ms=1.0 + v, loss_alone=l) for (n, v), l in alone.items()]

    plain, _ = greedy_search(candidates(), loss_of("plain"), budget=4.0)
    pruned_cands = candidates()
    pruned, _ = greedy_search(pruned_cands, loss_of("pruned"), budget=4.0, prune=True)
    assert pruned == plain and sum(alone[(n, v)] for n, v in pruned.items()) <= 4.0
    assert calls["pruned"] < calls["plain"]
    assert any(c.status.startswith("over the budget left") for c in pruned_cands)
