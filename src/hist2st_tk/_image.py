"""What every reader of H&E pixels shares, at the bottom of the package: the value of padding outside an
image, and the error of a region whose pixels cannot be decoded (io raises it, pp and tl handle it)."""

from __future__ import annotations

import numpy as np

#: Value of padding outside the image (white glass background).
PAD_VALUE = 255


class UnreadableImageError(OSError):
    """Pixels of an image region cannot be decoded (for example a corrupted tile of a slide file).

    A reader that could decode part of the region passes it as ``pixels`` (``(c, h, w)``, white where it
    failed) with ``bad``, the ``(h, w)`` mask of the pixels it could not decode.
    """

    def __init__(self, message: str, *, pixels: np.ndarray | None = None, bad: np.ndarray | None = None):
        super().__init__(message)
        self.pixels = pixels
        self.bad = bad
