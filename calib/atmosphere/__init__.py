"""Atmosphere calibration: molecular profile, Raman LIDAR, All-Sky Camera, CTC, data selection and correction."""
