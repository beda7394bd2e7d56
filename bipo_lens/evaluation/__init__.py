from bipo_lens.evaluation.evaluate import MarginScorer, evaluate, spearman, summarise
from bipo_lens.evaluation.judge import EmbeddingJudge, OpenAIJudge, ProbeJudge, make_judge

__all__ = ["EmbeddingJudge", "MarginScorer", "OpenAIJudge", "ProbeJudge", "evaluate", "make_judge", "spearman", "summarise"]
