"""Feature matrices to scores: metrics, protocols, cross-validation, stacking, reports."""
