"""The judge that turns an answer into a verdict, the reward built on it, and batch evaluation.

Public names (light imports only; batch evaluation lives in :mod:`judge.evaluate`)::

    from judge import judge_answer, compute_reward, RewardConfig
"""

from judge.abstain import is_abstention
from judge.judge import JudgeError, Verdict, ajudge_answer, deterministic_verdict, judge_answer
from judge.reward import RewardBreakdown, RewardConfig, compute_reward

__all__ = [
    "JudgeError",
    "RewardBreakdown",
    "RewardConfig",
    "Verdict",
    "ajudge_answer",
    "compute_reward",
    "deterministic_verdict",
    "is_abstention",
    "judge_answer",
]
