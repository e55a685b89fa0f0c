"""ElasticNet with its own cross-validated (alpha, L1 ratio), able to hand the choice over.

Under a held-out protocol (VIDEVAL's 100 splits, random splits) the honest stack refits every
base on five inner folds of each split's training part. ElasticNetCV would search its
4 x 50 x 5-fold grid again in each of them, though the choice its outer fit made came from that
training part alone: reusing it on subsets of the part leaks nothing about the scored part, as
svr_grid does with its (C, gamma) (see :func:`featbank.learning.engine.evaluate`).
"""

from __future__ import annotations

from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.utils.validation import check_is_fitted


class SelfTunedElasticNet(ElasticNetCV):
    """scikit-learn's ElasticNetCV plus :meth:`selected`; fitting and predicting are unchanged."""

    def selected(self) -> ElasticNet:
        """An unfitted ElasticNet fixed to the chosen alpha and L1 ratio, with the same solver settings."""
        check_is_fitted(self, "alpha_")
        # ElasticNetCV's "auto" (Gram when samples outnumber features) is ElasticNet's False: the
        # refit inside ElasticNetCV.fit uses the plain solver too.
        precompute = False if isinstance(self.precompute, str) else self.precompute
        return ElasticNet(alpha=self.alpha_, l1_ratio=self.l1_ratio_, fit_intercept=self.fit_intercept,
                          precompute=precompute, max_iter=self.max_iter, tol=self.tol,
                          positive=self.positive, random_state=self.random_state, selection=self.selection)
