"""Work on a workload or on a run's chosen individuals besides the search: training, retraining, re-evaluation,
deployment export, DRAM energy tables and sparsity-tile statistics."""
