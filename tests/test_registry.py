import pytest

from jaxformer import registry


def test_lookup_known_names():
    assert registry.lookup("models", "gpt").__name__ == "jaxformer.models.gpt"
    assert registry.lookup("tasks", "lm").__name__ == "jaxformer.tasks.lm"
    assert registry.lookup("data", "shakespeare").__name__ == "jaxformer.data.shakespeare"


def test_unknown_name_lists_available():
    with pytest.raises(registry.UnknownNameError, match=r"unknown model 'gtp'; available: .*gpt"):
        registry.lookup("models", "gtp")


def test_internal_modules_are_not_entries():
    assert "tokenizers" not in registry.available("data")
