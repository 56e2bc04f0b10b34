"""The image shape of the package's own 28 x 28 grey-scale builders (mnist, omniglot, ...)."""

IMAGE_SHAPE: tuple[int, int, int] = (28, 28, 1)
"""[H, W, C] of one MNIST, binarized-MNIST or Omniglot image."""
