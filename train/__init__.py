"""edgepin train package."""
