"""Executors move evaluation requests to evaluators and results back; they never touch the search state.

:mod:`.base` holds the contract (:class:`~.base.EvalRequest`, :class:`~.base.Stage`, :class:`~.base.Executor`);
:mod:`.local` evaluates in this process; :mod:`.slurm` as SLURM array jobs per stage (:mod:`.slurm_cluster`:
SLURM's client commands, :mod:`.job_files`: a run's jobs folder) whose tasks run :mod:`.worker`, and
:mod:`.pool` as persistent array tasks for the whole run (:mod:`.pool_files`: their queue, :mod:`.pool_task`:
the task side). This package imports nothing itself, so an array task loads only the worker side.
"""
