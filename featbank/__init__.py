"""featbank: decode each video once, bank frozen features in Zarr, stack regressors on top."""

__version__ = "0.1.0"
