"""jaxformer: a JAX/Flax research framework for transformer models."""

__version__ = "0.1.0"
