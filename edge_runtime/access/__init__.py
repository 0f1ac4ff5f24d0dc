"""The access decision: collect an attempt (`pipeline`), decide (`decision`: where the
decision is taken), enrol, run the loop, drive the actuator, show the status line."""
