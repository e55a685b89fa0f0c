"""Track definitions (``tracks/*.toml``) and example manifests (``examples/*.csv``), shipped as data."""
