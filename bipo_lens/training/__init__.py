from bipo_lens.training.bipo import BipoConfig, train_bipo
from bipo_lens.scoring import FastPath, PairScorer  # re-exported: the trainer stands on it
from bipo_lens.training.caa import train_caa, train_pca
from bipo_lens.training.reps import RepsConfig, train_reps

__all__ = ["BipoConfig", "FastPath", "PairScorer", "train_bipo", "train_caa", "train_pca", "RepsConfig", "train_reps"]
