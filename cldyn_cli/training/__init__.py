"""Training loops: the base network, and the closed-loop compensation."""
