"""The run's HDF5 results file: :mod:`.format` (layout), :mod:`.writer` (the single writer, SWMR appends,
recovery after a killed writer) and :mod:`.reader` (readers, also while a run writes)."""

from .format import FORMAT, FORMAT_VERSION, RunHeader
from .reader import RunData, load_run, open_for_reading, open_results, read_strings, read_table, run_workload
from .writer import ResultsWriter, create_results, open_for_append

__all__ = ["FORMAT", "FORMAT_VERSION", "ResultsWriter", "RunData", "RunHeader", "create_results", "load_run",
           "open_for_append", "open_for_reading", "open_results", "read_strings", "read_table", "run_workload"]
