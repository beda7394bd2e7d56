from bipo_lens.training.bipo import BipoConfig, FastPath, train_bipo
from bipo_lens.training.caa import train_caa

__all__ = ["BipoConfig", "FastPath", "train_bipo", "train_caa"]
