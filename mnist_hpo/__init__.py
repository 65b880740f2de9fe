"""Optuna hyperparameter search for the BatchNorm CNNs of An et al. 2020 on MNIST."""

__version__ = "0.1.0"
