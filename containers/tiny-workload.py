"""Write the embedded default shrunk to seconds (4 individuals, 200 samples) as a workload file, inside an image:
python - GENERATIONS OUTPUT < containers/tiny-workload.py (build-check.sh and apptainer-check.sh)."""

import sys

import yaml

from qsx_batch.workload import default_workload_path

generations, output = int(sys.argv[1]), sys.argv[2]
path = default_workload_path()
data = yaml.safe_load(path.read_text())
w = data["workload"]
w["model"]["weights"] = str((path.parent / w["model"]["weights"]).resolve())
w["exploration"]["nsga"].update(pop_size=4, offsprings=4, generations=generations)
w["exploration"]["datasets"]["exploration"]["sample_limit"] = 200
w["exploration"]["datasets"]["baseline"]["sample_limit"] = 200
with open(output, "w") as out:
    out.write(yaml.safe_dump(data, sort_keys=False))
