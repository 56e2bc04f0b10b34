"""The image format of every dataset here: 28 x 28 grey levels, flattened row-major to 784."""

IMAGE_SHAPE: tuple[int, int] = (28, 28)
NUM_PIXELS: int = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
