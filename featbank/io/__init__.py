"""Tables in and out: manifests, challenge tracks, imported and exported feature sets."""
