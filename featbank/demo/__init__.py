"""The built-in demo: synthesized distorted clips with sound and labels, run end to end."""
