"""Recipes (``*.toml``): published challenge systems rebuilt from featbank's extractors and learners,
shipped as data and read by :mod:`featbank.recipes` (``featbank recipe list / show / run``)."""
