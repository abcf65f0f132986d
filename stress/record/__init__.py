"""A run's record: the journal folded once (``fold``), and the numbers derived from it (``derived``).

Every reader of a run directory (runner, run.json, report, history, soak, planner) goes through
:func:`load` / :func:`fold` (a live one through :class:`Follower`); none reads the journal on its own.
"""
from stress.record.fold import RunRecord, fold, load
from stress.record.follow import Follower

__all__ = ["Follower", "RunRecord", "fold", "load"]
