"""Sample data with known truth for the pointing and optics modules, built on real star positions.

Stars come from the Yale Bright Star Catalogue (``calib.sky.catalog``; J2000 positions moved
by their proper motion to the night of observation); their horizontal
positions at the CTAO sites (``calib.sky.sites``) are computed with astropy, one vectorised
transform per batch of times, without any IERS download (``calib.sky.altaz``), as apparent
places (refraction for the site pressure, US76).  On top of the
true directions the instruments are simulated with known parameters:

* telescope mispointing from a TPOINT-style pointing model plus Gaussian measurement noise
  (``simulate_pointing_run``);
* star images on the camera lid and reference LEDs on the camera, seen by a pointing CCD whose
  zero point and roll are unknown, with the camera displaced and rotated relative to the optical
  axis (``simulate_camera_alignment``);
* star images across the field of a Schwarzschild–Couder telescope with a radial distortion
  polynomial (``simulate_dual_mirror``);
* CCD images of stars rastered across the field of single-mirror (parabolic) optics: Gaussian
  mirror blur plus third-order coma of a paraboloid (sagittal coma a = theta D^2 / (16 f),
  Schroeder, Astronomical Optics, ch. 5), photon and background noise (``simulate_star_images``).

Every generator takes a seed (``numpy.random.default_rng``) and stores its truth in
``table.meta['truth']`` (JSON).  Observation dates lie inside the bundled IERS-B table.
"""
from __future__ import annotations

import json

import astropy.units as u
import numpy as np
from astropy.table import Table
from astropy.time import Time

from calib.contract import CalibrationError
from calib.sky.altaz import star_altaz
from calib.sky.catalog import bright_stars, skycoord
from calib.sky.sites import SITES

__all__ = [
    "NIGHT_START",
    "DEFAULT_POINTING_MODEL",
    "LST_FOCAL_LENGTH",
    "LST_MIRROR_DIAMETER",
    "SST_FOCAL_LENGTH",
    "observation_times",
    "horizontal_stars",
    "tangent_plane",
    "simulate_pointing_run",
    "led_layout",
    "simulate_camera_alignment",
    "simulate_dual_mirror",
    "coma_photon_offsets",
    "true_r80",
    "simulate_star_images",
]

#: start of a March 2025 night (UTC) at each site; all dates inside the bundled IERS-B table
NIGHT_START = {"north": "2025-03-15T20:30:00", "south": "2025-03-16T00:30:00"}

#: pointing-model truth (arcsec), LST-like magnitudes
DEFAULT_POINTING_MODEL = {"IA": 120.0, "IE": -45.0, "CA": 30.0, "NPAE": -20.0, "AN": 15.0, "AW": -25.0, "TF": 60.0}

LST_FOCAL_LENGTH = 28.0 * u.m
LST_MIRROR_DIAMETER = 23.0 * u.m
#: effective focal length of a Schwarzschild-Couder SST (ASTRI / CHEC design, ~37.5 mm/deg)
SST_FOCAL_LENGTH = 2.15 * u.m


def _site(site: str):
    try:
        return SITES[site]
    except KeyError:
        raise CalibrationError(f"unknown site {site!r}; use one of {sorted(SITES)}") from None


def observation_times(site: str, n: int, hours: float = 9.0) -> Time:
    """``n`` times evenly spread over one night at ``site``."""
    return Time(NIGHT_START[site]) + np.linspace(0.0, hours, n) * u.hour


def site_pressure(site: str) -> u.Quantity:
    """Mean air pressure at the site (US Standard Atmosphere 1976 at the site height), for refraction."""
    from calib.atmosphere.molecular import us76_temperature_pressure

    return us76_temperature_pressure(_site(site).height)[1].to(u.hPa)


def horizontal_stars(site: str, times: Time, vmax: float = 4.0) -> tuple[Table, u.Quantity, u.Quantity]:
    """Catalogue stars to ``vmax`` and their apparent (refracted) alt, az at ``times`` (n_times x n_stars)."""
    stars = bright_stars(vmax)
    times = Time(times)
    epoch = times if times.ndim == 0 else times.ravel()[0]        # proper motion to the night of observation
    alt, az = star_altaz(skycoord(stars, epoch), _site(site), times, pressure=site_pressure(site))
    return stars, alt, az


def tangent_plane(alt, az, alt0, az0) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic coordinates (radians) of (alt, az) about the direction (alt0, az0).

    xi grows with azimuth, eta with elevation (a horizon-aligned camera frame).
    """
    e, a = u.Quantity(alt, u.rad).value, u.Quantity(az, u.rad).value
    e0, a0 = u.Quantity(alt0, u.rad).value, u.Quantity(az0, u.rad).value
    cos_c = np.sin(e0) * np.sin(e) + np.cos(e0) * np.cos(e) * np.cos(a - a0)
    xi = np.cos(e) * np.sin(a - a0) / cos_c
    eta = (np.cos(e0) * np.sin(e) - np.sin(e0) * np.cos(e) * np.cos(a - a0)) / cos_c
    return xi, eta


def _from_tangent_plane(xi, eta, alt0, az0) -> tuple[u.Quantity, u.Quantity]:
    e0, a0 = u.Quantity(alt0, u.rad).value, u.Quantity(az0, u.rad).value
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        sin_e = np.cos(c) * np.sin(e0) + np.where(rho > 0, eta * np.sin(c) * np.cos(e0) / rho, 0.0)
    e = np.arcsin(sin_e)
    a = a0 + np.arctan2(xi * np.sin(c), rho * np.cos(e0) * np.cos(c) - eta * np.sin(e0) * np.sin(c))
    return (e * u.rad).to(u.deg), ((a * u.rad).to(u.deg)) % (360 * u.deg)


def _meta(table: Table, truth: dict, **extra) -> Table:
    table.meta["truth"] = json.dumps(truth)
    table.meta.update(extra)
    table.meta["catalog"] = "Yale Bright Star Catalogue, 5th revised edition (VizieR V/50)"
    return table


# ----------------------------------------------------------------- 1002 pointing model
def simulate_pointing_run(n_observations: int = 300, site: str = "north", seed: int = 0,
                          model: dict | None = None, noise_arcsec: float = 5.0, vmax: float = 4.0,
                          min_el: float = 15.0, max_el: float = 85.0, n_times: int | None = None) -> Table:
    """Star observations for a pointing-model fit.

    ``n_times`` batches over one night (default min(n, 240)); the catalogue is transformed once
    for all of them; each observation picks a random star visible between ``min_el`` and
    ``max_el`` in its batch.  The raw encoder position is the true position plus the model
    offsets of ``model`` (TPOINT terms, arcsec) plus Gaussian noise of ``noise_arcsec`` per axis
    on the sky.
    """
    from calib.pointing.pointing_model import pointing_offsets

    rng = np.random.default_rng(seed)
    model = dict(DEFAULT_POINTING_MODEL if model is None else model)
    n_times = n_times or min(n_observations, 240)
    times = observation_times(site, n_times)
    stars, alt, az = horizontal_stars(site, times, vmax)
    visible = (alt.value > min_el) & (alt.value < max_el)
    batch = np.arange(n_observations) % n_times
    keys = rng.random((n_observations, visible.shape[1])) * visible[batch]
    star = np.argmax(keys, axis=1)
    if not np.all(visible[batch, star]):
        raise CalibrationError("some time batches have no visible star; widen the elevation range")
    el_true, az_true = alt[batch, star], az[batch, star]
    d_az, d_el = pointing_offsets(model, az_true, el_true)
    noise = rng.normal(0.0, noise_arcsec, (2, n_observations)) * u.arcsec
    az_enc = (az_true + d_az + noise[0] / np.cos(el_true)) % (360 * u.deg)
    el_enc = el_true + d_el + noise[1]
    table = Table()
    table["time"] = times[batch]
    table["hr"] = stars["hr"][star]
    table["vmag"] = stars["vmag"][star]
    table["ra"] = stars["ra"][star]
    table["dec"] = stars["dec"][star]
    table["az_true"] = az_true.to(u.deg)
    table["el_true"] = el_true.to(u.deg)
    table["az_encoder"] = az_enc.to(u.deg)
    table["el_encoder"] = el_enc.to(u.deg)
    truth = {"pointing_model_arcsec": model, "noise_arcsec_per_axis": noise_arcsec, "site": site, "seed": seed}
    return _meta(table, truth, site=site)


# ----------------------------------------------------------------- 1001 camera alignment
def led_layout(n_leds: int = 8, margin: u.Quantity = 40 * u.mm) -> tuple[u.Quantity, u.Quantity]:
    """Nominal reference-LED positions in the camera frame: a ring just outside the LSTCam pixels."""
    from calib.data import path

    geometry = Table.read(path("LSTCam.camgeom.fits.gz"))
    radius = np.max(np.hypot(geometry["pix_x"].quantity, geometry["pix_y"].quantity)).to(u.mm) + margin
    angle = np.arange(n_leds) * 2 * np.pi / n_leds + np.pi / n_leds
    return radius * np.cos(angle), radius * np.sin(angle)


def _richest_field(site: str, time: Time, radius: float, vmax_field: float, min_el: float):
    """Bright star (V < 3) above ``min_el`` with the most catalogue neighbours within ``radius`` deg."""
    stars, alt, az = horizontal_stars(site, time, vmax_field)
    alt, az = alt[0], az[0]
    up = np.flatnonzero(alt.value > min_el)
    e, a = alt[up].to_value(u.rad), az[up].to_value(u.rad)
    vec = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=1)
    cos_sep = np.clip(vec @ vec.T, -1, 1)
    neighbours = (cos_sep > np.cos(np.radians(radius))).sum(axis=1)
    candidates = np.flatnonzero((stars["vmag"][up].value < 3.0))
    if candidates.size == 0:
        raise CalibrationError("no bright star above the elevation limit at this time")
    best = candidates[np.argmax(neighbours[candidates])]
    return stars[up], alt[up], az[up], up, best


def simulate_camera_alignment(site: str = "north", seed: int = 0, time: str | None = None,
                              offset=(3.0, -2.0) * u.mm, rotation=0.20 * u.deg,
                              ccd_zero=(12.0, -7.0) * u.mm, ccd_roll=1.5 * u.deg,
                              star_noise=0.30 * u.mm, led_noise=0.10 * u.mm, n_leds: int = 8,
                              field_radius: float = 2.0, vmax: float = 7.0) -> Table:
    """Star images on the camera lid and reference-LED spots, as measured by a pointing CCD.

    The telescope tracks the richest bright-star field; stars within ``field_radius`` deg fall
    on the lid at f * (xi + i eta) about the optical axis (LST focal length; the residual
    mispointing after the pointing model is taken as negligible).  The CCD frame has unknown zero
    point ``ccd_zero`` and roll ``ccd_roll``: z_ccd = e^{i roll} z_optical + zero.  LEDs sit on
    the camera at nominal positions L (camera frame); the camera is displaced by ``offset`` and
    rotated by ``rotation`` relative to the optical axis: z_optical = e^{i rotation} L + offset.
    Rows: ``kind`` ('star' or 'led'), measured x, y (mm, CCD frame), nominal x, y (LEDs, camera
    frame, mm), sky offsets xi, eta (stars, rad).
    """
    rng = np.random.default_rng(seed)
    time = Time(time or NIGHT_START[site]) + 2 * u.hour
    stars, alt, az, _, best = _richest_field(site, time, field_radius, vmax, 35.0)
    alt0, az0 = alt[best], az[best]
    # aim a little off the bright star so that it does not sit on the optical axis
    el_c, az_c = alt0 + 0.3 * u.deg, az0 + 0.2 * u.deg / np.cos(alt0)
    xi, eta = tangent_plane(alt, az, el_c, az_c)
    inside = np.hypot(xi, eta) < np.radians(field_radius)
    xi, eta, field = xi[inside], eta[inside], stars[inside]
    f = LST_FOCAL_LENGTH.to_value(u.mm)
    roll = np.exp(1j * u.Quantity(ccd_roll, u.rad).value)
    zero = complex(*u.Quantity(ccd_zero, u.mm).value)
    z_star = roll * f * (xi + 1j * eta) + zero
    z_star += np.array([1, 1j]) @ rng.normal(0, u.Quantity(star_noise, u.mm).value, (2, z_star.size))
    lx, ly = led_layout(n_leds)
    led = lx.to_value(u.mm) + 1j * ly.to_value(u.mm)
    z_led = roll * (np.exp(1j * u.Quantity(rotation, u.rad).value) * led + complex(*u.Quantity(offset, u.mm).value)) + zero
    z_led += np.array([1, 1j]) @ rng.normal(0, u.Quantity(led_noise, u.mm).value, (2, n_leds))
    n_s = z_star.size
    table = Table()
    table["kind"] = ["star"] * n_s + ["led"] * n_leds
    table["hr"] = np.concatenate([field["hr"], np.full(n_leds, -1)])
    table["x"] = np.concatenate([z_star.real, z_led.real]) * u.mm
    table["y"] = np.concatenate([z_star.imag, z_led.imag]) * u.mm
    table["sigma"] = np.concatenate([np.full(n_s, u.Quantity(star_noise, u.mm).value),
                                     np.full(n_leds, u.Quantity(led_noise, u.mm).value)]) * u.mm
    table["nominal_x"] = np.concatenate([np.full(n_s, np.nan), led.real]) * u.mm
    table["nominal_y"] = np.concatenate([np.full(n_s, np.nan), led.imag]) * u.mm
    table["xi"] = np.concatenate([xi, np.full(n_leds, np.nan)]) * u.rad
    table["eta"] = np.concatenate([eta, np.full(n_leds, np.nan)]) * u.rad
    truth = {"offset_x_mm": float(u.Quantity(offset, u.mm)[0].value),
             "offset_y_mm": float(u.Quantity(offset, u.mm)[1].value),
             "rotation_deg": float(u.Quantity(rotation, u.deg).value),
             "ccd_roll_deg": float(u.Quantity(ccd_roll, u.deg).value),
             "focal_length_mm": f, "site": site, "seed": seed, "time": time.isot,
             "pointing_alt_deg": float(el_c.to_value(u.deg)), "pointing_az_deg": float(az_c.to_value(u.deg))}
    return _meta(table, truth, site=site, focal_length_mm=f)


# ----------------------------------------------------------------- 1003 dual-mirror plate scale
def simulate_dual_mirror(site: str = "south", seed: int = 0, n_pointings: int = 8,
                         plate_scale=37.52 * u.mm / u.deg, distortion=(-2.0e-3, 2.0e-5),
                         field_radius: float = 4.5, noise=0.15 * u.mm, camera_roll=0.8 * u.deg,
                         vmax: float = 6.5) -> Table:
    """Star images across the field of a Schwarzschild–Couder telescope.

    ``n_pointings`` fields over one night (real stars within ``field_radius`` deg).  The mapping
    from sky to focal plane is r = s * theta * (1 + k2 theta^2 + k4 theta^4) (theta in deg;
    ``distortion`` = (k2, k4) in deg^-2, deg^-4) along the star's direction, rotated by
    ``camera_roll``; Gaussian centroid noise ``noise`` per axis.  Columns: pointing, hr,
    sky offsets theta_x, theta_y (deg, ARC projection about the optical axis), measured x, y (mm).
    """
    rng = np.random.default_rng(seed)
    times = observation_times(site, n_pointings, hours=8.0)
    stars, alt, az = horizontal_stars(site, times, vmax)
    rows = []
    for k in range(n_pointings):
        up = np.flatnonzero((alt[k].value > 35) & (stars["vmag"].value < 2.5))
        centre = up[rng.integers(up.size)]
        el_c = alt[k, centre] + rng.uniform(-1, 1) * u.deg
        az_c = az[k, centre] + rng.uniform(-1, 1) * u.deg / np.cos(el_c)
        xi, eta = tangent_plane(alt[k], az[k], el_c, az_c)
        rho = np.hypot(xi, eta)
        inside = np.flatnonzero((rho < np.tan(np.radians(field_radius))) & np.isfinite(rho))
        theta = np.degrees(np.arctan(rho[inside]))
        direction = (xi[inside] + 1j * eta[inside]) / np.where(rho[inside] > 0, rho[inside], 1.0)
        rows.append((np.full(inside.size, k), stars["hr"][inside], theta * direction))
    pointing = np.concatenate([r[0] for r in rows])
    hr = np.concatenate([r[1] for r in rows])
    w = np.concatenate([r[2] for r in rows])
    theta = np.abs(w)
    k2, k4 = distortion
    s = u.Quantity(plate_scale, u.mm / u.deg).value
    roll = np.exp(1j * u.Quantity(camera_roll, u.rad).value)
    z = roll * s * w * (1 + k2 * theta**2 + k4 * theta**4)
    sig = u.Quantity(noise, u.mm).value
    z += np.array([1, 1j]) @ rng.normal(0, sig, (2, z.size))
    table = Table()
    table["pointing"] = pointing
    table["hr"] = hr
    table["theta_x"] = w.real * u.deg
    table["theta_y"] = w.imag * u.deg
    table["x"] = z.real * u.mm
    table["y"] = z.imag * u.mm
    truth = {"plate_scale_mm_per_deg": s, "k2_per_deg2": k2, "k4_per_deg4": k4,
             "camera_roll_deg": float(u.Quantity(camera_roll, u.deg).value), "noise_mm": sig,
             "site": site, "seed": seed, "focal_length_m": float(SST_FOCAL_LENGTH.value)}
    return _meta(table, truth, site=site)


# ----------------------------------------------------------------- 1004/1005 star images
def coma_photon_offsets(rng, n: int, theta, focal_length=LST_FOCAL_LENGTH, diameter=LST_MIRROR_DIAMETER,
                        blur=8.0 * u.mm) -> tuple[np.ndarray, np.ndarray]:
    """Photon offsets (radial, tangential; mm) from the chief ray for a paraboloid at off-axis ``theta``.

    Third-order coma with the aperture stop at the mirror: a ray through pupil radius rho (0..1)
    and azimuth phi lands at a rho^2 (2 + cos 2phi, sin 2phi), a = theta D^2 / (16 f) (sagittal
    coma); plus a circular Gaussian blur (facet figure and alignment) of width ``blur``.
    ``theta`` may be an array of length n (one angle per photon).
    """
    theta = u.Quantity(theta, u.rad).value
    a = theta * diameter.to_value(u.mm) ** 2 / (16 * focal_length.to_value(u.mm))
    rho2 = rng.random(n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sigma = u.Quantity(blur, u.mm).value
    dr = a * rho2 * (2 + np.cos(2 * phi)) + rng.normal(0, sigma, n)
    dt = a * rho2 * np.sin(2 * phi) + rng.normal(0, sigma, n)
    return dr, dt


def true_r80(theta, n_photons: int = 200_000, seed: int = 12345, **optics) -> u.Quantity:
    """80 % containment radius (mm, about the centroid) of the simulated PSF at ``theta``, by Monte Carlo."""
    rng = np.random.default_rng(seed)
    out = []
    for t in np.atleast_1d(u.Quantity(theta, u.deg)):
        dr, dt = coma_photon_offsets(rng, n_photons, t, **optics)
        out.append(np.quantile(np.hypot(dr - dr.mean(), dt - dt.mean()), 0.8))
    return np.array(out) * u.mm


def simulate_star_images(n_images: int = 60, seed: int = 0, site: str = "north", max_theta=1.5 * u.deg,
                         n_pix: int = 96, pixel=2.5 * u.mm, blur=8.0 * u.mm, photons_v0: float = 30000.0,
                         background: float = 0.1, saturation: float = 4095.0, star_hr: int | None = None,
                         on_axis_fraction: float = 0.2) -> Table:
    """CCD images of a bright star rastered across the field of single-mirror (LST) optics.

    The telescope tracks a real bright star (V < 2, elevation > 40 deg, or catalogue star
    ``star_hr``) and is offset so that the star image lands at off-axis angle theta (uniform
    in [0, max_theta], a fraction ``on_axis_fraction`` exactly on axis) and random position angle.
    Each image is an ``n_pix`` square stamp (``pixel`` mm) centred on the chief-ray position
    f tan(theta); photon count ``photons_v0`` * 10^(-0.4 V) (Poisson), background Poisson with
    mean ``background`` per pixel, values clipped at ``saturation`` (ADC full scale).
    """
    rng = np.random.default_rng(seed)
    time = Time(NIGHT_START[site]) + 3 * u.hour
    stars, alt, az = horizontal_stars(site, time, 2.0 if star_hr is None else 8.0)
    if star_hr is None:
        up = np.flatnonzero(alt[0].value > 40)
        pick = up[np.argmin(stars["vmag"][up])]
    else:
        hits = np.flatnonzero(stars["hr"] == star_hr)
        if hits.size == 0:
            raise CalibrationError(f"HR {star_hr} is not in the catalogue to V = 8")
        pick = hits[0]
    vmag = float(u.Quantity(stars["vmag"].quantity[pick]).value)
    theta = rng.uniform(0, u.Quantity(max_theta, u.deg).value, n_images)
    theta[: int(round(on_axis_fraction * n_images))] = 0.0
    psi = rng.uniform(0, 2 * np.pi, n_images)
    f = LST_FOCAL_LENGTH.to_value(u.mm)
    r_chief = f * np.tan(np.radians(theta))
    n_photons = rng.poisson(photons_v0 * 10 ** (-0.4 * vmag), n_images)
    px = u.Quantity(pixel, u.mm).value
    images = np.zeros((n_images, n_pix, n_pix), dtype=np.float32)
    for start in range(0, n_images, 50):  # photons in chunks of 50 images to bound memory
        ids = np.arange(start, min(start + 50, n_images))
        image_id = np.repeat(ids, n_photons[ids])
        dr, dt = coma_photon_offsets(rng, image_id.size, np.radians(theta[image_id]) * u.rad, blur=blur)
        # stamp frame: radial/tangential offsets rotated by psi to camera axes, stamp centred on the chief ray
        c, s = np.cos(psi[image_id]), np.sin(psi[image_id])
        sx = (dr * c - dt * s) / px + n_pix / 2
        sy = (dr * s + dt * c) / px + n_pix / 2
        ok = (sx >= 0) & (sx < n_pix) & (sy >= 0) & (sy < n_pix)
        flat = ((image_id[ok] - start) * n_pix + sy[ok].astype(int)) * n_pix + sx[ok].astype(int)
        images[ids] = np.bincount(flat, minlength=ids.size * n_pix * n_pix).reshape(ids.size, n_pix, n_pix)
    images += rng.poisson(background, images.shape).astype(np.float32)
    images = np.minimum(images, saturation)
    table = Table()
    table["image"] = images
    table["theta"] = theta * u.deg
    table["psi"] = np.degrees(psi) * u.deg
    table["stamp_x"] = (r_chief * np.cos(psi) - n_pix / 2 * px) * u.mm   # focal-plane position of the stamp corner
    table["stamp_y"] = (r_chief * np.sin(psi) - n_pix / 2 * px) * u.mm
    table["chief_x"] = r_chief * np.cos(psi) * u.mm
    table["chief_y"] = r_chief * np.sin(psi) * u.mm
    table["n_photons"] = n_photons
    grid = np.linspace(0, u.Quantity(max_theta, u.deg).value, 13)
    coma_per_deg = np.radians(1.0) * LST_MIRROR_DIAMETER.to_value(u.mm) ** 2 / (16 * f)
    truth = {"blur_mm": u.Quantity(blur, u.mm).value, "coma_mm_per_deg": coma_per_deg,
             "focal_length_mm": f, "mirror_diameter_mm": LST_MIRROR_DIAMETER.to_value(u.mm),
             "r80_theta_grid_deg": grid.tolist(),
             "r80_mm_on_grid": true_r80(grid * u.deg, blur=blur).value.tolist(),
             "star_hr": int(stars["hr"][pick]), "vmag": vmag, "site": site, "seed": seed,
             "background_per_pixel": background}
    return _meta(table, truth, site=site, pixel_mm=px, saturation=saturation,
                 focal_length_mm=f, plate_scale_mm_per_deg=f * np.pi / 180)
