"""The ARCADE Raman LIDAR as a configured instance of the CTAO Raman LIDAR retrieval.

Method (PROV-DATA-COM-ARCADE-LIDAR): the ARCADE LIDAR (Valore et al. 2015, 2017; a compact,
portable INFN Raman LIDAR with elastic 355 nm and N2-Raman 387 nm channels, tested at
L'Aquila for deployment at CTAO-North) is processed exactly as any
CTAO Raman LIDAR (``calib.atmosphere.lidar``, I-DATA-COM-3001): Raman extinction after
Ansmann et al. (1990, 1992) with the Angstrom conversion, aerosol optical depth and
transmission profile, Klett (1981) - Fernald (1984) backward elastic inversion, cloud layers
from the elastic/Raman scattering ratio, uncertainties from photon statistics.  Only the
instrument configuration differs (``ARCADE_LIDAR``: smaller receiver, finer 3.75 m bins,
later complete overlap at 500 m, longer integration); the numbers are representative of the
instrument, not its datasheet.
"""
from __future__ import annotations

from pathlib import Path

from astropy.table import Table

from calib.atmosphere import lidar
from calib.atmosphere.lidar import ARCADE_LIDAR
from calib.contract import CalibrationModule, Evidence

__all__ = ["ARCADE_LIDAR", "write_sample", "run", "check", "CONTRACT"]


def write_sample(directory: Path, seed: int) -> Path:
    """Simulated ARCADE photon counts through a boundary layer and a thin cloud, with truth."""
    return lidar.write_sample(directory, seed, config=ARCADE_LIDAR, name="arcade_lidar_sample.h5")


def run(input: Path, output: Path, config: dict | None = None) -> Table:
    """Retrieve the ARCADE profile (the instrument configuration is stored in the input file)."""
    table = lidar.run(input, output, config)
    return table


def check(result: Table, input: Path) -> Evidence:
    return lidar.check(result, input)


CONTRACT = CalibrationModule(
    codes=("PROV-DATA-COM-ARCADE-LIDAR",),
    title="ARCADE Raman LIDAR: aerosol extinction, optical depth, transmission and clouds",
    inputs=lidar.CONTRACT.inputs,
    outputs=lidar.CONTRACT.outputs,
    sample=write_sample, run=run, check=check,
    references=lidar.CONTRACT.references + (
        "Valore L. et al. 2015, The ARCADE Raman Lidar System for the Cherenkov Telescope Array, "
        "Proc. 34th ICRC (arXiv:1509.02681)",
        "Valore L. et al. 2017, The ARCADE Raman Lidar and atmospheric simulations for CTA, "
        "Proc. 35th ICRC (arXiv:1709.04246)"),
    tests=("calib/atmosphere/tests/test_lidar.py",),
    version=lidar.VERSION,
    config=dict(lidar.CONTRACT.config),
)
