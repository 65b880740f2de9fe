import pytest
import torch

from mnist_hpo.errors import ModelError
from mnist_hpo.models import FamilyConfig, build_model, count_parameters, max_conv_layers, model_names, mult_adds, summary_table

EXPECTED_PARAMETERS = {
    "m3": 1_124_180,
    "m5": 1_128_180,
    "m7": 2_291_972,
    "kaggle-cnn": 174_506,
    "wide-cnn": 11_705_450,
    "tiny-cnn": 9_956,
    "simple-cnn": 93_322,
}


@pytest.mark.parametrize("name", EXPECTED_PARAMETERS)
def test_parameter_counts_match_the_paper_and_the_seeds(name):
    assert count_parameters(build_model(name)) == EXPECTED_PARAMETERS[name]


def test_registry_lists_exactly_the_seven_models():
    assert sorted(model_names()) == sorted(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("name", EXPECTED_PARAMETERS)
def test_forward_returns_logits_for_a_batch(name):
    # Seeded: an untrained network's logits are nearly one constant vector, so with unseeded weights
    # all ten now and then came out positive (wide-cnn's did, in CI).
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        model = build_model(name).eval()
        out = model(torch.rand(3, 1, 28, 28) * 2 - 1)
    assert out.shape == (3, 10)
    # Logits, not probabilities (the seeds' trailing Softmax is gone): rows of a probability simplex are
    # all >= 0 and sum to 1; rows of log-probabilities (a LogSoftmax) are all <= 0 and exp-sum to 1.
    assert (out < 0).any() and (out > 0).any(), out
    assert not torch.allclose(out.sum(1), torch.ones(3), atol=1e-3), out
    assert not torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-3), out


def test_paper_networks_follow_the_authors_layout():
    model = build_model("m3")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(range(32, 177, 16))
    assert all(c.bias is None and c.padding == (0, 0) and c.kernel_size == (3, 3) for c in convs)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].bias is None and linear[0].in_features == 176 * 8 * 8
    assert isinstance(list(model.modules())[-1], torch.nn.BatchNorm1d)


def test_family_builder_with_head_and_counts_before_training():
    config = FamilyConfig(
        conv_layers=4, kernel_size=5, first_channels=8, growth=4, head_width=32, dropout_in=0.2, dropout_hidden=0.3, activation="silu"
    )
    model = build_model({"name": "family", "config": config.to_dict()})
    # conv weights + BN, then 20*12*12 -> 32 (with bias) -> 10 (no bias) + BN1d(10)
    convs = 1 * 8 * 25 + 8 * 12 * 25 + 12 * 16 * 25 + 16 * 20 * 25
    bns = 2 * (8 + 12 + 16 + 20)
    head = 20 * 12 * 12 * 32 + 32 + 32 * 10 + 20
    assert count_parameters(model) == convs + bns + head
    assert mult_adds(model) > 0
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_depth_rule_and_bad_configs_are_model_errors():
    assert [max_conv_layers(k) for k in (3, 5, 7)] == [13, 6, 4]
    with pytest.raises(ModelError, match="at most 4 layers"):
        build_model({"name": "family", "config": {"conv_layers": 5, "kernel_size": 7}})
    with pytest.raises(ModelError, match="kernel_size"):
        build_model({"name": "family", "config": {"kernel_size": 4}})
    with pytest.raises(ModelError, match="unknown family setting"):
        build_model({"name": "family", "config": {"width": 3}})
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        build_model("nope")


def test_summary_table_shows_the_m3_total():
    assert "1,124,180" in summary_table(build_model("m3"))


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    spec = {"name": "ensemble", "members": [{"name": "tiny-cnn"}, {"name": "tiny-cnn"}]}
    ensemble = build_model(spec).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in ensemble.members]).mean(0)
        assert torch.allclose(ensemble(x).exp(), expected, atol=1e-6)
