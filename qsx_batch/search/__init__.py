"""The NSGA-II search and everything a run does from start to stop: starting individuals, the sensitivity sweep,
the run's results file, its log and its assembly."""
