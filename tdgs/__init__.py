"""TDGS: learnable and stochastic pooling for CNNs, built around Temperature Driven Gumbel-Softmax pooling."""

__version__ = "0.1.0"
