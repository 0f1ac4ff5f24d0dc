"""edgepin export package."""
