"""Regressors mapping banked features to MOS: named sklearn pipelines, a torch MLP head, safe persistence."""

from regressors.learners import LEARNERS, make_learner
from regressors.mlp import MLPHeadRegressor
from regressors.persist import load_learner, save_learner
from regressors.svr_grid import SVRGridRegressor

__all__ = ["LEARNERS", "MLPHeadRegressor", "SVRGridRegressor", "load_learner", "make_learner", "save_learner"]
