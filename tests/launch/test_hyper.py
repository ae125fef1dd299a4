"""Sweep expansion: product, zip, chain, seeded random search."""

import pytest

from launch import hyper


def test_product_varies_the_last_sweep_fastest():
    points = hyper.product([hyper.sweep("config.a", [1, 2]), hyper.sweep("config.b", ["x", "y"])])
    assert points == [{"config.a": 1, "config.b": "x"}, {"config.a": 1, "config.b": "y"},
                      {"config.a": 2, "config.b": "x"}, {"config.a": 2, "config.b": "y"}]


def test_zip_and_chain():
    zipped = hyper.zipit([hyper.sweep("config.a", [1, 2]), hyper.sweep("config.b", [3, 4])])
    assert zipped == [{"config.a": 1, "config.b": 3}, {"config.a": 2, "config.b": 4}]
    chained = hyper.chainit([hyper.fixed("name", "base"), zipped])
    assert chained == [{"name": "base"}, *zipped]
    with pytest.raises(ValueError, match="one length"):
        hyper.zipit([hyper.sweep("config.a", [1, 2]), hyper.sweep("config.b", [3])])


def test_conflicting_values_of_one_key_are_an_error():
    with pytest.raises(ValueError, match="config.a twice"):
        hyper.product([hyper.fixed("config.a", 1), hyper.fixed("config.a", 2)])


def test_keys_must_be_config_keys_or_name():
    with pytest.raises(ValueError, match="must be 'name' or start with 'config.'"):
        hyper.sweep("optim.lr", [1e-3])


def test_random_search_is_reproducible_and_in_range():
    space = {"config.optim.lr": hyper.loguniform(1e-5, 1e-1),
             "config.model.dropout_rate": hyper.choice([0.0, 0.1, 0.2]),
             "config.train.batch_size": hyper.randint(8, 64)}
    first = hyper.random(200, seed=3, space=space)
    assert first == hyper.random(200, seed=3, space=space)
    assert first != hyper.random(200, seed=4, space=space)
    lrs = [p["config.optim.lr"] for p in first]
    assert all(1e-5 * 0.999 <= lr <= 1e-1 * 1.001 for lr in lrs)
    # Log-uniform: about a quarter of the draws in each of the four decades.
    per_decade = [sum(1 for lr in lrs if 10 ** (d - 5) <= lr < 10 ** (d - 4)) for d in range(4)]
    assert all(30 <= n <= 70 for n in per_decade), per_decade
    assert all(float(f"{lr:.3g}") == lr for lr in lrs)  # Short, exact names.
    assert {p["config.model.dropout_rate"] for p in first} == {0.0, 0.1, 0.2}
    assert all(8 <= p["config.train.batch_size"] <= 64 for p in first)
