"""The feature bank: the Zarr store, content digests, and feature matrices read from it."""
