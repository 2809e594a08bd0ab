"""Printed letters rendered from the fonts that ship with matplotlib: a source task for transfer learning.

Transfer learning pays when the pretraining task is bigger and more varied than the target.
Offline there is no ImageNet, but every install of matplotlib carries about twenty text fonts
(DejaVu Sans, Sans Mono and Serif, STIX, Computer Modern, in upright, bold and italic styles).
:func:`render_glyphs` draws 41 letters (:data:`GLYPH_CHARS`) in each of them, centred and scaled to fill
a 32 x 32 box like the digits of scikit-learn's data set (which were 32 x 32 bitmaps before
they were counted in 4 x 4 blocks to give 8 x 8 images); :func:`glyph_images` turns them into
many jittered 8 x 8 images.  Chapter 05 pretrains a CNN on these letters and reuses it for
handwritten digits with a few labels each.

Dimension letters: N images, H_img x W_img pixels.

The rendering goes through FreeType (``matplotlib.ft2font``), so it needs no display and no
network, and it is deterministic for a given matplotlib.
"""
from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["GLYPH_CHARS", "GLYPH_FONTS", "font_dir", "render_glyphs", "glyph_images"]

#: The letters drawn: A-Z and the lower-case letters whose shape is not their capital's once
#: scaled to fill the box (c, o, s, v, w, x, z, and i, j, l, p, which nearly equal I, J, I, P
#: in several fonts, would be two labels for one picture).
GLYPH_CHARS = string.ascii_uppercase + "abdefghkmnqrtuy"

#: The text fonts of matplotlib's ``mpl-data/fonts/ttf`` (file stems); symbol fonts left out, and
#: cmti10 too: matplotlib 3.10 (Colab's) does not ship it, 3.11 does.
GLYPH_FONTS = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
               "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
               "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
               "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
               "cmr10", "cmb10", "cmss10", "cmtt10")


def font_dir() -> Path:
    """The folder of matplotlib's bundled TrueType fonts."""
    import matplotlib
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render(char: str, path: Path, box: int) -> np.ndarray:
    """One glyph, cropped to its ink, scaled (aspect kept) to fill ``box - 4`` pixels, centred: (box, box)."""
    import torch
    import torch.nn.functional as F
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(path))
    font.set_size(48, 72)                        # 48 pixels: large enough to downscale cleanly
    font.set_text(char)
    font.draw_glyphs_to_bitmap(antialiased=True)
    ink = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(ink > 0.2)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    height, width = ink.shape
    scale = (box - 4) / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = F.interpolate(torch.from_numpy(ink)[None, None], size=(new_h, new_w), mode="bilinear",
                          align_corners=False, antialias=True)[0, 0].numpy()
    out = np.zeros((box, box), dtype=np.float32)
    top, left = (box - new_h) // 2, (box - new_w) // 2
    out[top:top + new_h, left:left + new_w] = np.clip(small, 0.0, 1.0)
    return out


@lru_cache(maxsize=4)
def render_glyphs(chars: str = GLYPH_CHARS, fonts: tuple = GLYPH_FONTS,
                  box: int = 32) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Every character of ``chars`` in every font of ``fonts``, ink 1 on background 0.

    Returns
    -------
    images : (N, box, box) float32 in [0, 1], N = len(chars) * (fonts found)
    labels : (N,) int64, the index of the character in ``chars``
    fonts : the font stems used (a font missing from this matplotlib is skipped)

    About a second for the 41 letters in 20 fonts.  Cached: the arrays are shared, do not edit them.
    """
    folder = font_dir()
    found = tuple(f for f in fonts if (folder / f"{f}.ttf").exists())
    if not found:
        raise FileNotFoundError(f"none of the fonts {fonts} is in {folder}; is matplotlib installed in full?")
    images = [_render(c, folder / f"{f}.ttf", box) for c in chars for f in found]
    labels = np.repeat(np.arange(len(chars)), len(found))
    return np.stack(images), labels, found


def glyph_images(variants: int = 16, seed: int = 0, chars: str = GLYPH_CHARS, device=None,
                 max_degrees: float = 15.0, max_shift: float = 2.0):
    """Jittered 8 x 8 letters: the pretraining set of chapter 05's transfer study.

    Each of the ``variants`` copies of :func:`render_glyphs` is rotated (up to ``max_degrees``)
    and shifted (up to ``max_shift`` pixels of the 32 x 32 box), every other copy with strokes
    thickened by a 3 x 3 max-filter (handwriting is bolder than most fonts), then averaged over
    4 x 4 blocks to 8 x 8, as scikit-learn's digits were made, and scaled so that each image's
    brightest pixel is 1 (as ``digits_images`` scales the digits).

    Returns
    -------
    x : torch float32 (N, 1, 8, 8) on ``device``; y : torch int64 (N,) letter index
    """
    import torch
    import torch.nn.functional as F
    from dlcourse.cnn.torch_impl import image_affine

    images, labels, _ = render_glyphs(chars)
    big = torch.as_tensor(images, device=device)[:, None]             # (G, 1, 32, 32)
    rng = np.random.default_rng(seed)
    copies = []
    for v in range(variants):
        def draw(limit):
            return torch.as_tensor(rng.uniform(-limit, limit, len(big)).astype(np.float32), device=big.device)
        x = image_affine(big, draw(max_degrees), draw(max_shift), draw(max_shift))
        if v % 2:
            x = F.max_pool2d(x, 3, stride=1, padding=1)                 # thicker strokes
        copies.append(F.avg_pool2d(x, 4))                               # (G, 1, 8, 8)
    x = torch.cat(copies)                                               # (variants * G, 1, 8, 8)
    x = x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    y = torch.as_tensor(labels, device=big.device).repeat(variants)
    return x, y
