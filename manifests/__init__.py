"""Track definitions (``tracks/*.toml``), example manifests (``examples/*.csv``) and published item
subsets (``subsets/*.toml``, see :mod:`featbank.io.subsets`), shipped as data."""
