"""Decode once, sample per extractor, run extractors, commit rows; locally or on dask."""
