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
* CCD images of stars rastered across the field of single-mirror (parabolic) optics: photons
  ray-traced off an exact paraboloid (coma of all orders from the geometry, not from the
  third-order formula the coma fit uses; Schroeder, Astronomical Optics, ch. 5) plus a Gaussian
  facet blur, photon and background noise (``simulate_star_images``).

Every generator takes a seed (``numpy.random.default_rng``) and stores its truth in
``table.meta['truth']`` (JSON).  Observation dates lie inside the bundled IERS-B table.
"""
from __future__ import annotations

import functools
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
    "DEFAULT_MOUNT",
    "mount_pointing",
    "mount_encoder_offsets",
    "tpoint_equivalent",
    "LST_FOCAL_LENGTH",
    "LST_MIRROR_DIAMETER",
    "SST_FOCAL_LENGTH",
    "observation_times",
    "horizontal_stars",
    "tangent_plane",
    "simulate_pointing_run",
    "led_layout",
    "simulate_camera_alignment",
    "dual_mirror_mapping",
    "simulate_dual_mirror",
    "paraboloid_photon_offsets",
    "paraboloid_image_moments",
    "true_r80",
    "simulate_star_images",
]

#: start of a March 2025 night (UTC) at each site; all dates inside the bundled IERS-B table
NIGHT_START = {"north": "2025-03-15T20:30:00", "south": "2025-03-16T00:30:00"}

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
#: the true mount, as explicit geometric misalignments (arcsec unless stated): what a survey of
#: the mount would find, not the coefficients of the fitted model.  Signs: see ``mount_pointing``.
DEFAULT_MOUNT = {
    "azimuth_encoder_zero": -120.0,      # azimuth encoder reading at mechanical azimuth 0
    "elevation_encoder_zero": -45.0,     # elevation encoder reading with the tube horizontal
    "collimation": 30.0,                 # optical axis rotated about the tube's vertical (left-right)
    "elevation_axis_tilt": 20.0,         # elevation axis not perpendicular to the azimuth axis
    "azimuth_axis_tilt_north": -15.0,    # azimuth axis tipped towards north
    "azimuth_axis_tilt_east": -25.0,     # azimuth axis tipped towards east
    "camera_sag_mm": 8.145,              # camera-support sag at the horizon (mm, Hooke: x cos E)
    "focal_length_mm": 28000.0,          # converts the camera sag into an angle
    # not in the 7-term model:
    "azimuth_encoder_ellipticity": 6.0,  # encoder ring read 2nd harmonic: dA_enc = h sin(2A + phase)
    "azimuth_encoder_ellipticity_phase_rad": 0.7,
    "azimuth_track_wave": 4.0,           # rail unevenness: axis tilt h cos(3A + phase) towards north
    "azimuth_track_wave_phase_rad": 1.9,
}

_ARCSEC = np.pi / (180.0 * 3600.0)


def _rotation(axis: int, angle) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about coordinate axis 0, 1 or 2 by ``angle`` (rad, array)."""
    angle = np.asarray(angle, dtype=float)
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[..., axis, axis] = 1.0
    m[..., i, i], m[..., j, j] = c, c
    m[..., i, j], m[..., j, i] = -s, s
    return m


def mount_pointing(mount: dict, az_encoder, el_encoder) -> tuple[np.ndarray, np.ndarray]:
    """Direction (az, el; rad) of the optical axis for raw encoder readings (rad), by rotations.

    Horizontal frame x north, y east, z up; a direction is (cos E cos A, cos E sin A, sin E).
    Boresight along the tube's x; the chain, from the tube outwards: camera sag (rotation about
    the elevation axis by -sag/f cos E: a camera sagging down moves the imaged sky up), collimation
    (about the tube's vertical), elevation rotation, elevation-axis tilt (about the forward
    horizontal), azimuth rotation, and the azimuth-axis tilt (north/east, plus the track wave that
    varies with azimuth).  Mechanical angles: A = A_enc - zero_A - h sin(2 A_enc + phase),
    E = E_enc - zero_E.  Exact to all orders; no pointing-model design matrix is used.
    """
    m = {k: float(v) for k, v in mount.items()}
    a_enc, e_enc = np.asarray(az_encoder, float).ravel(), np.asarray(el_encoder, float).ravel()
    a = (a_enc - m["azimuth_encoder_zero"] * _ARCSEC
         - m["azimuth_encoder_ellipticity"] * _ARCSEC * np.sin(2 * a_enc + m["azimuth_encoder_ellipticity_phase_rad"]))
    e = e_enc - m["elevation_encoder_zero"] * _ARCSEC
    sag = -m["camera_sag_mm"] / m["focal_length_mm"] * np.cos(e)
    wave = m["azimuth_track_wave"] * _ARCSEC * np.cos(3 * a + m["azimuth_track_wave_phase_rad"])
    chain = (_rotation(1, (m["azimuth_axis_tilt_north"] * _ARCSEC + wave))
             @ _rotation(0, np.full(a.shape, -m["azimuth_axis_tilt_east"] * _ARCSEC))
             @ _rotation(2, a)
             @ _rotation(0, np.full(a.shape, m["elevation_axis_tilt"] * _ARCSEC))
             @ _rotation(1, -e)
             @ _rotation(2, np.full(a.shape, m["collimation"] * _ARCSEC))
             @ _rotation(1, sag))
    d = chain[..., :, 0]                 # the image of the tube's x axis
    return np.arctan2(d[:, 1], d[:, 0]) % (2 * np.pi), np.arcsin(np.clip(d[:, 2], -1.0, 1.0))


def mount_encoder_offsets(mount: dict, az, el, iterations: int = 8) -> tuple[u.Quantity, u.Quantity]:
    """Encoder readings minus true position (dA, dE) that put the optical axis on (az, el).

    Inverts ``mount_pointing`` by fixed-point iteration (offsets are arcminutes, so it converges
    to < 1e-6 arcsec in a few steps).
    """
    az = u.Quantity(az, u.deg).to_value(u.rad).ravel()
    el = u.Quantity(el, u.deg).to_value(u.rad).ravel()
    a_enc, e_enc = az.copy(), el.copy()
    for _ in range(iterations):
        a_p, e_p = mount_pointing(mount, a_enc, e_enc)
        a_enc = a_enc - ((a_p - az + np.pi) % (2 * np.pi) - np.pi)
        e_enc = e_enc - (e_p - el)
    d_az = (a_enc - az + np.pi) % (2 * np.pi) - np.pi
    return (d_az * u.rad).to(u.arcsec), ((e_enc - el) * u.rad).to(u.arcsec)


def tpoint_equivalent(mount: dict) -> dict:
    """First-order TPOINT coefficients (arcsec) of the mount's 7-term misalignments (the harmonic
    terms have no equivalent): IA = -zero_A, IE = zero_E, CA = collimation, NPAE = -elevation
    axis tilt, AN = -tilt north, AW = tilt east, TF = sag / f (established by rotation, see tests)."""
    m = {k: float(v) for k, v in mount.items()}
    return {"IA": -m["azimuth_encoder_zero"], "IE": m["elevation_encoder_zero"], "CA": m["collimation"],
            "NPAE": -m["elevation_axis_tilt"], "AN": -m["azimuth_axis_tilt_north"],
            "AW": m["azimuth_axis_tilt_east"],
            "TF": m["camera_sag_mm"] / m["focal_length_mm"] / _ARCSEC}


#: first-order TPOINT equivalent of DEFAULT_MOUNT (arcsec): IA 120, IE -45, CA 30, NPAE -20, AN 15, AW -25, TF 60
DEFAULT_POINTING_MODEL = tpoint_equivalent(DEFAULT_MOUNT)


def simulate_pointing_run(n_observations: int = 300, site: str = "north", seed: int = 0,
                          mount: dict | None = None, noise_arcsec: float = 5.0, vmax: float = 4.0,
                          min_el: float = 15.0, max_el: float = 85.0, n_times: int | None = None) -> Table:
    """Star observations for a pointing-model fit.

    ``n_times`` batches over one night (default min(n, 240)); the catalogue is transformed once
    for all of them; each observation picks a random star visible between ``min_el`` and
    ``max_el`` in its batch.  The raw encoder position that puts the star on the optical axis
    is computed by geometry from the physical misalignments of ``mount`` (``mount_pointing``,
    inverted), which include terms the TPOINT model does not have; then Gaussian centring
    noise of ``noise_arcsec`` per axis on the sky is added.
    """
    rng = np.random.default_rng(seed)
    mount = dict(DEFAULT_MOUNT if mount is None else mount)
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
    d_az, d_el = mount_encoder_offsets(mount, az_true, el_true)
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
    truth = {"mount": mount, "tpoint_equivalent_arcsec": tpoint_equivalent(mount),
             "noise_arcsec_per_axis": noise_arcsec, "site": site, "seed": seed}
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
    mispointing after the pointing model is taken as negligible) plus the coma shift of the image
    centroid, radially outwards, from the exact ray trace of the paraboloid
    (``paraboloid_image_moments``).  The CCD frame has unknown zero
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
    # star images through the optics: the chief ray lands at f (xi + i eta) (gnomonic), the image
    # centroid a coma shift further out, from the exact ray trace of the paraboloid (all orders;
    # ~4 % of the radius for the LST), which the LEDs on the camera body do not have
    w = xi + 1j * eta
    theta = np.degrees(np.arctan(np.abs(w)))
    grid = np.linspace(0.0, field_radius * 1.01, 21)
    shift_grid = paraboloid_image_moments(grid, blur=0 * u.mm, n_rho=100, n_phi=64)["shift"]
    shift = np.interp(theta, grid, shift_grid)
    z_star = roll * (f * w + shift * w / np.where(np.abs(w) > 0, np.abs(w), 1.0)) + zero
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
             "pointing_alt_deg": float(el_c.to_value(u.deg)), "pointing_az_deg": float(az_c.to_value(u.deg)),
             "coma_shift_mm_at_1deg": float(np.interp(1.0, grid, shift_grid))}
    # what the coma calibration (I-DATA-xST-1004) provides: shift = kappa1 theta + kappa3 theta^3, here
    # fitted to the ray trace over the field (the third-order formula D^2 / (16 f) is 3 % low)
    kappa1, kappa3 = np.linalg.lstsq(np.column_stack([grid, grid**3]), shift_grid, rcond=None)[0]
    return _meta(table, truth, site=site, focal_length_mm=f, coma_mm_per_deg=float(kappa1),
                 coma_mm_per_deg3=float(kappa3))


# ----------------------------------------------------------------- 1003 dual-mirror plate scale
def dual_mirror_mapping(w, truth: dict) -> np.ndarray:
    """Noise-free focal-plane positions (complex, mm) of sky offsets ``w`` (complex, deg) for the
    simulated Schwarzschild–Couder optics described by ``truth`` (``simulate_dual_mirror``).

    Radial distortion s w (1 + k2 |w|^2 + k4 |w|^4) plus the decentering distortion of a tilted or
    decentred secondary (Conrady; Brown, Photogramm. Eng. 32 (1966) 444): in complex form
    P* w^2 + 2 P |w|^2 with P = P1 + i P2 (dx = P1 (r^2 + 2x^2) + 2 P2 x y, dy = P2 (r^2 + 2 y^2) + 2 P1 x y),
    then the camera roll.  The decentering term is even in w: the odd radial model lacks it.
    """
    w = np.asarray(w, complex)
    rho2 = np.abs(w) ** 2
    z = truth["plate_scale_mm_per_deg"] * w * (1 + truth["k2_per_deg2"] * rho2 + truth["k4_per_deg4"] * rho2**2)
    p = complex(truth.get("decentering_p1_mm_per_deg2", 0.0), truth.get("decentering_p2_mm_per_deg2", 0.0))
    z = z + np.conj(p) * w**2 + 2 * p * rho2
    return np.exp(1j * np.radians(truth["camera_roll_deg"])) * z


def simulate_dual_mirror(site: str = "south", seed: int = 0, n_pointings: int = 8,
                         plate_scale=37.52 * u.mm / u.deg, distortion=(-2.0e-3, 2.0e-5),
                         decentering=(2.0e-3, -1.0e-3) * u.mm / u.deg**2,
                         field_radius: float = 4.5, noise=0.15 * u.mm, camera_roll=0.8 * u.deg,
                         vmax: float = 6.5) -> Table:
    """Star images across the field of a Schwarzschild–Couder telescope.

    ``n_pointings`` fields over one night (real stars within ``field_radius`` deg).  The mapping
    from sky to focal plane (``dual_mirror_mapping``) is r = s * theta * (1 + k2 theta^2 + k4 theta^4)
    (theta in deg; ``distortion`` = (k2, k4) in deg^-2, deg^-4) along the star's direction, plus a
    decentering distortion ``decentering`` = (P1, P2) (a secondary decentred by ~1 mm; up to
    ~0.1 mm at the field edge, which the fitted radial model lacks), rotated by ``camera_roll``;
    Gaussian centroid noise ``noise`` per axis.  Columns: pointing, hr, sky offsets theta_x,
    theta_y (deg, ARC projection about the optical axis), measured x, y (mm).
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
    k2, k4 = distortion
    s = u.Quantity(plate_scale, u.mm / u.deg).value
    p1, p2 = u.Quantity(decentering, u.mm / u.deg**2).value
    sig = u.Quantity(noise, u.mm).value
    truth = {"plate_scale_mm_per_deg": s, "k2_per_deg2": k2, "k4_per_deg4": k4,
             "decentering_p1_mm_per_deg2": float(p1), "decentering_p2_mm_per_deg2": float(p2),
             "camera_roll_deg": float(u.Quantity(camera_roll, u.deg).value), "noise_mm": sig,
             "site": site, "seed": seed, "focal_length_m": float(SST_FOCAL_LENGTH.value)}
    z = dual_mirror_mapping(w, truth)
    z += np.array([1, 1j]) @ rng.normal(0, sig, (2, z.size))
    table = Table()
    table["pointing"] = pointing
    table["hr"] = hr
    table["theta_x"] = w.real * u.deg
    table["theta_y"] = w.imag * u.deg
    table["x"] = z.real * u.mm
    table["y"] = z.imag * u.mm
    return _meta(table, truth, site=site)


# ----------------------------------------------------------------- 1004/1005 star images
def paraboloid_photon_offsets(rng, n: int, theta, focal_length=LST_FOCAL_LENGTH, diameter=LST_MIRROR_DIAMETER,
                              blur=8.0 * u.mm, pupil=None) -> tuple[np.ndarray, np.ndarray]:
    """Photon offsets (radial outwards, tangential; mm) from the chief ray, by exact ray tracing.

    Parallel rays from a star at off-axis angle ``theta`` (rad; scalar or one per photon) fill
    the aperture of a paraboloid z = r^2 / (4 f) of diameter D uniformly (or at the given
    ``pupil`` = (radius mm, azimuth rad) points); each is reflected about the exact surface
    normal (v' = v - 2 (v.n) n) and intersected with the focal plane z = f.  The chief ray
    (through the vertex) lands at f tan(theta) on the far side of the axis; offsets are taken
    from it.  A circular Gaussian blur of width ``blur`` (facet figure and alignment) is added.
    No aberration formula is used: coma of every order comes out of the geometry.
    """
    f, half = focal_length.to_value(u.mm), 0.5 * diameter.to_value(u.mm)
    theta = np.broadcast_to(u.Quantity(theta, u.rad).value, (n,))
    if pupil is None:
        rho, phi = half * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    else:
        rho, phi = pupil
    x, y = rho * np.cos(phi), rho * np.sin(phi)
    z = (x * x + y * y) / (4 * f)
    nx, ny = -x / (2 * f), -y / (2 * f)
    norm = np.sqrt(nx * nx + ny * ny + 1.0)
    nx, ny, nz = nx / norm, ny / norm, 1.0 / norm
    vx, vz = -np.sin(theta), -np.cos(theta)                 # travelling towards the mirror
    dot = vx * nx + vz * nz
    rx, ry, rz = vx - 2 * dot * nx, -2 * dot * ny, vz - 2 * dot * nz
    t = (f - z) / rz
    dr = -(x + t * rx + f * np.tan(theta))                  # image side is -x: outwards = -x
    dt = y + t * ry
    sigma = u.Quantity(blur, u.mm).value
    if sigma > 0:
        dr = dr + rng.normal(0, sigma, dr.size)
        dt = dt + rng.normal(0, sigma, dt.size)
    return dr, dt


def paraboloid_image_moments(theta, focal_length=LST_FOCAL_LENGTH, diameter=LST_MIRROR_DIAMETER,
                             blur=8.0 * u.mm, n_rho: int = 300, n_phi: int = 256) -> dict[str, np.ndarray]:
    """True image moments at off-axis angles ``theta`` (deg), by pupil quadrature of the ray trace.

    Midpoint rule in rho^2 (uniform illumination) x azimuth; the Gaussian blur adds sigma^2 to
    both variances and nothing to the mean or the third moment.  Returns arrays: shift (mean dr),
    var_r, var_t (mm^2), skew_r (third central radial moment, mm^3).
    """
    half = 0.5 * diameter.to_value(u.mm)
    rho = half * np.sqrt((np.arange(n_rho) + 0.5) / n_rho)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    rho, phi = (g.ravel() for g in np.meshgrid(rho, phi, indexing="ij"))
    sigma2 = u.Quantity(blur, u.mm).value ** 2
    out = {k: [] for k in ("shift", "var_r", "var_t", "skew_r")}
    for t in np.atleast_1d(u.Quantity(theta, u.deg).to_value(u.rad)):
        dr, dt = paraboloid_photon_offsets(None, rho.size, t, focal_length, diameter, 0 * u.mm, (rho, phi))
        m = dr.mean()
        out["shift"].append(m)
        out["var_r"].append(np.mean((dr - m) ** 2) + sigma2)
        out["var_t"].append(np.mean(dt**2) + sigma2)
        out["skew_r"].append(np.mean((dr - m) ** 3))
    return {k: np.array(v) for k, v in out.items()}


def true_r80(theta, focal_length=LST_FOCAL_LENGTH, diameter=LST_MIRROR_DIAMETER, blur=8.0 * u.mm,
             fraction: float = 0.8, n_rho: int = 100, n_phi: int = 64) -> u.Quantity:
    """Containment radius (default 80 %; mm, about the centroid) of the ray-traced PSF at ``theta`` (deg).

    Deterministic: the ray trace (``paraboloid_photon_offsets``, no blur) at pupil quadrature
    points (midpoint rule in rho^2 x azimuth over the half pupil: the image is symmetric in the
    tangential offset) gives point images at distance d_i from the image centroid; the circular
    Gaussian blur of width sigma turns each into a disc whose light within R is the non-central
    chi-square CDF with 2 degrees of freedom, P(chi'^2_2(d_i^2/sigma^2) < R^2/sigma^2) (Marcum Q);
    the mean over the pupil is solved for ``fraction`` by Brent's method.  Quadrature error
    < 3e-5 relative at the default grid (< 3e-6 at 300 x 256), no Monte Carlo noise.
    """
    from scipy.optimize import brentq
    from scipy.special import chndtr

    sigma = u.Quantity(blur, u.mm).value
    half = 0.5 * diameter.to_value(u.mm)
    rho = half * np.sqrt((np.arange(n_rho) + 0.5) / n_rho)
    phi = (np.arange(n_phi) + 0.5) * np.pi / n_phi
    rho, phi = (g.ravel() for g in np.meshgrid(rho, phi, indexing="ij"))
    out = []
    for t in np.atleast_1d(u.Quantity(theta, u.deg).to_value(u.rad)):
        dr, dt = paraboloid_photon_offsets(None, rho.size, t, focal_length, diameter, 0 * u.mm, (rho, phi))
        d = np.hypot(dr - dr.mean(), dt)
        if sigma <= 0:
            out.append(np.quantile(d, fraction))
            continue
        nc = (d / sigma) ** 2
        guess = sigma * np.sqrt(-2 * np.log(1 - fraction) + nc.mean())
        out.append(brentq(lambda r: np.mean(chndtr((r / sigma) ** 2, 2.0, nc)) - fraction,
                          0.0, guess + 6 * sigma + d.max(), xtol=1e-7))
    return np.array(out) * u.mm


@functools.lru_cache(maxsize=8)
def _optics_truth(max_theta_deg: float, blur_mm: float) -> tuple[dict, np.ndarray]:
    """Seed-independent truth of ``simulate_star_images`` (moments and r80 on 31 angles), cached."""
    fine = np.linspace(0, max_theta_deg, 31) * u.deg
    return (paraboloid_image_moments(fine, blur=blur_mm * u.mm, n_rho=200, n_phi=128),
            true_r80(fine, blur=blur_mm * u.mm).value)


def simulate_star_images(n_images: int = 60, seed: int = 0, site: str = "north", max_theta=1.5 * u.deg,
                         n_pix: int = 96, pixel=2.5 * u.mm, blur=8.0 * u.mm, photons_v0: float = 30000.0,
                         background: float = 0.1, saturation: float = 4095.0, star_hr: int | None = None,
                         on_axis_fraction: float = 0.2) -> Table:
    """CCD images of a bright star rastered across the field of single-mirror (LST) optics.

    The telescope tracks a real bright star (V < 2, elevation > 40 deg, or catalogue star
    ``star_hr``) and is offset so that the star image lands at off-axis angle theta (uniform
    in [0, max_theta], a fraction ``on_axis_fraction`` exactly on axis) and random position angle.
    Photons are ray-traced off the paraboloid (``paraboloid_photon_offsets``).  Each image is an
    ``n_pix`` square stamp (``pixel`` mm) centred, to a random fraction of a pixel, on the design image
    position f tan(theta) plus the third-order coma shift; photon count ``photons_v0`` * 10^(-0.4 V) (Poisson), background Poisson with
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
    coma_per_deg = np.radians(1.0) * LST_MIRROR_DIAMETER.to_value(u.mm) ** 2 / (16 * f)
    design_shift = coma_per_deg * theta
    r_stamp = r_chief + design_shift
    n_photons = rng.poisson(photons_v0 * 10 ** (-0.4 * vmag), n_images)
    px = u.Quantity(pixel, u.mm).value
    # the stamp is cut at whole CCD pixels: its corner lies at a random fraction of a pixel from
    # the design image position (not always on a pixel corner)
    jitter = rng.uniform(-0.5, 0.5, (2, n_images))
    images = np.zeros((n_images, n_pix, n_pix), dtype=np.float32)
    for start in range(0, n_images, 50):  # photons in chunks of 50 images to bound memory
        ids = np.arange(start, min(start + 50, n_images))
        image_id = np.repeat(ids, n_photons[ids])
        dr, dt = paraboloid_photon_offsets(rng, image_id.size, np.radians(theta[image_id]) * u.rad, blur=blur)
        # stamp frame: radial/tangential offsets rotated by psi to camera axes; the stamp is centred
        # on the image expected from the design optics (chief ray + third-order coma shift)
        dr = dr - design_shift[image_id]
        c, s = np.cos(psi[image_id]), np.sin(psi[image_id])
        sx = (dr * c - dt * s) / px + n_pix / 2 - jitter[0, image_id]
        sy = (dr * s + dt * c) / px + n_pix / 2 - jitter[1, image_id]
        ok = (sx >= 0) & (sx < n_pix) & (sy >= 0) & (sy < n_pix)
        flat = ((image_id[ok] - start) * n_pix + sy[ok].astype(int)) * n_pix + sx[ok].astype(int)
        images[ids] = np.bincount(flat, minlength=ids.size * n_pix * n_pix).reshape(ids.size, n_pix, n_pix)
    images += rng.poisson(background, images.shape).astype(np.float32)
    images = np.minimum(images, saturation)
    table = Table()
    table["image"] = images
    table["theta"] = theta * u.deg
    table["psi"] = np.degrees(psi) * u.deg
    table["stamp_x"] = (r_stamp * np.cos(psi) + (jitter[0] - n_pix / 2) * px) * u.mm   # focal-plane stamp corner
    table["stamp_y"] = (r_stamp * np.sin(psi) + (jitter[1] - n_pix / 2) * px) * u.mm
    table["chief_x"] = r_chief * np.cos(psi) * u.mm
    table["chief_y"] = r_chief * np.sin(psi) * u.mm
    table["n_photons"] = n_photons
    # truth: image moments and r80 on a grid of off-axis angles by pupil quadrature of the same ray
    # trace (deterministic, no Monte Carlo error); coma_mm_per_deg is the third-order value, for reference only
    fine = np.linspace(0, u.Quantity(max_theta, u.deg).value, 31)
    moments, r80_grid = _optics_truth(float(u.Quantity(max_theta, u.deg).value), float(u.Quantity(blur, u.mm).value))
    truth = {"moments_theta_grid_deg": fine.tolist(), **{f"{k}_on_grid": v.tolist() for k, v in moments.items()},
             "blur_mm": u.Quantity(blur, u.mm).value, "coma_mm_per_deg": coma_per_deg,
             "focal_length_mm": f, "mirror_diameter_mm": LST_MIRROR_DIAMETER.to_value(u.mm),
             "r80_theta_grid_deg": fine.tolist(), "r80_mm_on_grid": r80_grid.tolist(),
             "r80_method": "pupil quadrature of the ray trace with the Gaussian blur (non-central chi-square CDF); "
                           "interpolate with a cubic spline",
             "star_hr": int(stars["hr"][pick]), "vmag": vmag, "site": site, "seed": seed,
             "background_per_pixel": background}
    return _meta(table, truth, site=site, pixel_mm=px, saturation=saturation,
                 focal_length_mm=f, plate_scale_mm_per_deg=f * np.pi / 180)
