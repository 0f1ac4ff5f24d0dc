"""edgepin calibration package."""
