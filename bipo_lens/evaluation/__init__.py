from bipo_lens.evaluation.evaluate import evaluate, spearman, summarise
from bipo_lens.evaluation.judge import EmbeddingJudge, OpenAIJudge, make_judge

__all__ = ["EmbeddingJudge", "OpenAIJudge", "evaluate", "make_judge", "spearman", "summarise"]
