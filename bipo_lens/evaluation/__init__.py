from bipo_lens.evaluation.evaluate import MarginScorer, evaluate, spearman, summarise
from bipo_lens.evaluation.judge import EmbeddingJudge, OpenAIJudge, make_judge

__all__ = ["EmbeddingJudge", "MarginScorer", "OpenAIJudge", "evaluate", "make_judge", "spearman", "summarise"]
