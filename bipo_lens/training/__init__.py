from bipo_lens.training.bipo import BipoConfig, train_bipo
from bipo_lens.training.scoring import FastPath, PairScorer
from bipo_lens.training.caa import train_caa

__all__ = ["BipoConfig", "FastPath", "PairScorer", "train_bipo", "train_caa"]
