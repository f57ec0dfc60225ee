"""Star-image kernels shared by the coma and PSF modules: screening, background, moments.

Images are stacks (n_images, ny, nx) of CCD stamps in counts; each stamp has the focal-plane
position of its lower-left corner (mm) and a common pixel size (mm).  Screening flags images
with NaN, saturated pixels or no star; background is the mean of the stamp border (unbiased
for Poisson backgrounds); moments are flux-weighted over the whole stamp, vectorised over images.
"""
from __future__ import annotations

import numpy as np

from calib.contract import CalibrationError

__all__ = ["FLAG_OK", "FLAG_NAN", "FLAG_SATURATED", "FLAG_NO_STAR", "FLAG_NAMES",
           "screen_images", "subtract_background", "image_moments"]

FLAG_OK, FLAG_NAN, FLAG_SATURATED, FLAG_NO_STAR = 0, 1, 2, 4
FLAG_NAMES = {FLAG_NAN: "NaN pixel", FLAG_SATURATED: "saturated", FLAG_NO_STAR: "no star above background"}


def _stack(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[0] == 0 or min(images.shape[1:]) < 8:
        raise CalibrationError(f"star images must be a non-empty stack (n, ny, nx) with ny, nx >= 8; got shape {images.shape}")
    return images


def screen_images(images, saturation: float, border: int = 2, min_snr: float = 10.0) -> np.ndarray:
    """Bit flags per image: NaN pixels, pixels at or above ``saturation``, no star (S/N < ``min_snr``)."""
    images = _stack(images)
    flags = np.zeros(images.shape[0], dtype=np.int16)
    flat = images.reshape(images.shape[0], -1)
    finite = np.isfinite(flat)
    all_finite = finite.all(axis=1)
    flags[~all_finite] |= FLAG_NAN
    if all_finite.all():  # common case: no copies needed
        flags[flat.max(axis=1) >= saturation] |= FLAG_SATURATED
        clean = images
    else:
        flags[np.any(np.where(finite, flat, -np.inf) >= saturation, axis=1)] |= FLAG_SATURATED
        clean = np.where(finite.reshape(images.shape), images, 0.0)
    sub, bkg = subtract_background(clean, border)
    signal = sub.reshape(sub.shape[0], -1).sum(axis=1)
    noise = np.sqrt(np.maximum(bkg, 1.0) * flat.shape[1])
    flags[~(signal > min_snr * noise)] |= FLAG_NO_STAR
    return flags


def subtract_background(images, border: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the per-image mean of a ``border``-pixel frame; returns (images, background per pixel)."""
    images = _stack(images)
    mask = np.ones(images.shape[1:], dtype=bool)
    mask[border:-border, border:-border] = False
    background = images[:, mask].mean(axis=1)
    return images - background[:, None, None], background


def image_moments(images, pixel: float, corner_x=0.0, corner_y=0.0, radial_angle=None) -> dict[str, np.ndarray]:
    """Flux, centroid (mm, focal plane) and central moments of background-subtracted images.

    ``radial_angle`` (rad, per image) rotates the second/third moments into the radial /
    tangential frame (radial = direction from the optical axis); default: along x.
    Returns dict of arrays: flux, x, y, m_rr, m_tt, m_rt, m_rrr.
    """
    images = _stack(images)
    n, ny, nx = images.shape
    xs = (np.arange(nx) + 0.5) * pixel
    ys = (np.arange(ny) + 0.5) * pixel
    flux = images.sum(axis=(1, 2))
    if np.any(flux <= 0):
        raise CalibrationError(f"{int(np.sum(flux <= 0))} image(s) have no positive flux after background "
                               "subtraction; screen them out first")
    row = images.sum(axis=1)  # (n, nx)
    col = images.sum(axis=2)  # (n, ny)
    mx = row @ xs / flux
    my = col @ ys / flux
    dx = xs[None, :] - mx[:, None]
    dy = ys[None, :] - my[:, None]
    cache: dict[int, np.ndarray] = {}

    def moment(a: int, b: int) -> np.ndarray:
        """sum(image dx^a dy^b) / flux, separably: contract x first, then y."""
        if a not in cache:
            cache[a] = np.einsum("nyx,nx->ny", images, dx**a)
        return np.einsum("ny,ny->n", cache[a], dy**b) / flux

    sxx, syy, sxy = moment(2, 0), moment(0, 2), moment(1, 1)
    ang = np.zeros(n) if radial_angle is None else np.broadcast_to(np.asarray(radial_angle, float), (n,))
    c, s = np.cos(ang), np.sin(ang)
    m_rr = c * c * sxx + 2 * c * s * sxy + s * s * syy
    m_tt = s * s * sxx - 2 * c * s * sxy + c * c * syy
    m_rt = c * s * (syy - sxx) + (c * c - s * s) * sxy
    # third radial moment: (c dx + s dy)^3 expanded binomially
    m_rrr = (c**3 * moment(3, 0) + 3 * c * c * s * moment(2, 1) + 3 * c * s * s * moment(1, 2)
             + s**3 * moment(0, 3))
    return {"flux": flux, "x": mx + np.asarray(corner_x, float), "y": my + np.asarray(corner_y, float),
            "m_rr": m_rr, "m_tt": m_tt, "m_rt": m_rt, "m_rrr": m_rrr}
