"""Array calibration: relative throughputs of the telescopes (Octocopter, CLF, Illuminator)."""
