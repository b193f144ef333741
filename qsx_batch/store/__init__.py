"""The run's HDF5 results file: :mod:`.format` (layout), :mod:`.writer` (the single writer, SWMR appends,
recovery after a killed writer) and :mod:`.reader` (reading, also while a run writes). The public Python API on
top of it is :mod:`qsx_batch.results`."""

from .format import FORMAT, FORMAT_VERSION, RunHeader
from .reader import (
                     Table,
                     minimum_accuracy,
                     ok_results,
                     open_for_reading,
                     open_results,
                     read_header,
                     read_table,
                     stored_result,
                     stored_workload,
                     table_names,
)
from .writer import ResultsWriter, create_results, open_for_append

__all__ = ["FORMAT", "FORMAT_VERSION", "ResultsWriter", "RunHeader", "Table", "create_results", "minimum_accuracy",
           "ok_results", "open_for_append", "open_for_reading", "open_results", "read_header", "read_table",
           "stored_result", "stored_workload", "table_names"]
