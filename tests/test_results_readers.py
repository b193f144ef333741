"""A run's results file, written by the project's own h5py, read completely by other HDF5 readers, each in its own
process (each bundles its own HDF5 library; a crash fails one test): Debian's h5dump, an older h5py, PyTables and
xarray with h5netcdf. Also: the Python API (qsx_batch.results), valid JSON/CSV exports of a failed individual, a
live reader while rows are appended, a version-1 file (tests/data) that still opens, takes appends and resumes,
and docs/results-format.md naming every column.

h5dump and the older h5py come from tests/install-readers.sh (tests/run.sh runs it); a missing reader skips here
and FAILS when CI=true.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import missing, tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.errors import UserError
from qsx_batch.evaluation.record import IndividualResult, Status
from qsx_batch.store import open_for_append
from qsx_batch.store.format import TABLE_COLUMNS

OLD_H5PY = Path(os.environ.get("QSX_OLD_H5PY_VENV", Path.home() / ".cache/qsx-batch/h5py-3.11.0")) / "bin/python"
VERSION_1 = Path(__file__).parent / "data" / "results-v1-killed.h5"  # see tests/data/README.md
FAILED_ERROR = "RuntimeError: CUDA out of memory (µ-test) " + "x" * 3000  # longer than the error column holds


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    """A tiny quantization run with a re-evaluation, a retraining and one failed individual (NaN parameters)."""
    tmp = tmp_path_factory.mktemp("readers")
    data = tiny_workload_dict("quantization", tmp)
    data["workload"]["retraining"]["datasets"]["train"]["sample_limit"] = 128
    data["workload"]["retraining"]["datasets"]["validation"]["sample_limit"] = 100
    out = tmp / "run.h5"
    assert main(["explore", str(write_workload(tmp, data)), "--output", str(out)]) == 0
    assert main(["evaluate", str(out), "--top", "1", "--dataset", "exploration"]) == 0
    assert main(["retrain", str(out), "--top", "1", "--epochs", "1", "--out", str(tmp / "retrained")]) == 0
    with open_for_append(out) as writer:
        genes, layers = len(writer.header.gene_names), len(writer.header.layer_names)
        zeros = np.zeros(layers, dtype=np.int64)
        failed = IndividualResult(
            genome=np.full(genes, 4.0), params=np.full(genes, np.nan), accuracy=0.0, correct=0, samples=0,
            cost=80.0, blocks_total=zeros, blocks_already=zeros, blocks_created=zeros, eval_seconds=0.0,
            host="node-7", device="", status=Status.FAILED, error=FAILED_ERROR)
        writer.append_individual(failed, generation=1, fitness=(0.0, 80.0), constraint=1.0)
    return out


@pytest.fixture(scope="module")
def recovered_file(run_file, tmp_path_factory) -> Path:
    """``run_file`` after a writer was killed in it (HDF5's "open for write" flag left set) and the next writer
    rewrote it into a clean file (the recovery copy, which makes the dimension scales anew)."""
    copy = shutil.copy(run_file, tmp_path_factory.mktemp("recovered") / "run.h5")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, pathlib; from qsx_batch.store import "
                               "open_for_append; w = open_for_append(pathlib.Path(sys.argv[1])); print('open', "
                               "flush=True); time.sleep(300)", str(copy)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "open"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    copy.with_name("run.h5.lock").unlink()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(copy, "r")
    open_for_append(copy).close()
    before, after = results.open(run_file), results.open(copy)
    for name in ("individuals", "baseline", "generations", "reevaluations", "retraining"):
        for column, values in before.table(name).items():
            np.testing.assert_array_equal(after.table(name)[column], values, err_msg=f"{name}/{column}")
    return copy


@pytest.fixture(params=["written", "recovered"])
def any_file(request, run_file, recovered_file) -> Path:
    """The run's file as written, and as rewritten by the recovery after a killed writer."""
    return run_file if request.param == "written" else recovered_file


def run_python(python: Path | str, code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (the test fails on a non-zero exit, a crash included)."""
    done = subprocess.run([str(python), "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        missing(f"{name} is not installed: pip install -e '.[test]'")


# -- other readers ------------------------------------------------------------------------------------------------
def test_debian_h5dump_reads_everything(any_file):
    if shutil.which("h5dump") is None:
        missing("h5dump is not installed: bash tests/install-readers.sh (apt-get install hdf5-tools)")
    done = subprocess.run(["h5dump", str(any_file)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr[-3000:]
    for text in ('ATTRIBUTE "format_version"', 'DATASET "params"', 'DATASET "weights"', '"failed"', '"units"'):
        assert text in done.stdout, text


READ_WITH_H5PY = """
    import sys, h5py, numpy as np
    read = 0
    def visit(name, obj):
        global read
        for key in obj.attrs:
            np.asarray(obj.attrs[key])
            read += 1
        if isinstance(obj, h5py.Dataset):
            obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) else obj[()]
            read += 1
    with h5py.File(sys.argv[1], "r") as f:
        visit("/", f)
        f.visititems(visit)
        params = f["individuals/params"]
        assert [[s.name for s in d.values()] for d in params.dims] == [["/individuals/row"], ["/individuals/gene"]]
        assert list(params.dims[1][0].asstr()[()]) == list(f["genes/names"].asstr()[()])
        assert int(f["individuals/count"][()]) == params.shape[0]
        assert f["individuals/status"].asstr()[-1] == "failed"
    print(h5py.version.hdf5_version, read)
"""


def test_older_h5py_reads_everything(any_file):
    if not OLD_H5PY.exists():
        missing(f"no older h5py at {OLD_H5PY}: bash tests/install-readers.sh")
    version, read = run_python(OLD_H5PY, READ_WITH_H5PY, str(any_file)).split()
    assert version.startswith(("1.12.", "1.14.")) and int(read) > 300, (version, read)


def test_pytables_reads_every_node(any_file):
    need_module("tables")
    out = run_python(sys.executable, """
        import json, sys, warnings, tables
        warnings.simplefilter("error")  # e.g. "problems loading leaf": a node PyTables cannot load
        # ... but PyTables has no type for vlen attributes: each DIMENSION_LIST (a dataset's dimension scales)
        warnings.filterwarnings("ignore", "Unsupported type for attribute 'DIMENSION_LIST'", tables.DataTypeWarning)
        unreadable, leaves, attributes = set(), 0, 0
        with tables.open_file(sys.argv[1]) as h5:
            for node in h5.walk_nodes("/"):
                assert not isinstance(node, tables.UnImplemented), node._v_pathname
                for key in node._v_attrs._f_list("all"):
                    getattr(node._v_attrs, key)
                    attributes += 1
                unreadable |= set(node._v_attrs._v_unimplemented)
                if isinstance(node, tables.Leaf):
                    node.read()
                    leaves += 1
            status = [v.decode() for v in h5.get_node("/individuals/status").read()]
            units = h5.get_node("/individuals/cost")._v_attrs.units
        print(json.dumps({"unreadable": sorted(unreadable), "leaves": leaves, "attributes": attributes,
                          "status": status, "units": str(units)}))
    """, str(any_file))
    seen = json.loads(out)
    assert seen["unreadable"] == ["DIMENSION_LIST"]
    assert seen["leaves"] > 100 and seen["attributes"] > 200
    assert seen["status"][-1] == "failed" and set(seen["status"][:-1]) == {"ok"} and seen["units"] == "bits"


def test_xarray_h5netcdf_names_every_dimension(any_file):
    need_module("xarray")
    need_module("h5netcdf")
    out = run_python(sys.executable, """
        import json, sys, warnings, h5py, xarray as xr
        warnings.simplefilter("error", UserWarning)  # a phony-dimension warning: an axis without a scale
        warnings.simplefilter("error", FutureWarning)
        path = sys.argv[1]
        with h5py.File(path, "r") as f:
            groups = [None] + [name for name, obj in f.items() if isinstance(obj, h5py.Group)]
        dims = {}
        for group in groups:  # every group, every variable and attribute loaded
            with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:
                ds.load()
                dims[str(group)] = sorted(ds.sizes)
        with xr.open_dataset(path, group="individuals", engine="h5netcdf") as ds:
            ind = {"params": list(ds["params"].dims), "blocks": list(ds["blocks_created"].dims),
                   "genes": [str(g) for g in ds["gene"].values], "units": ds["cost"].attrs["units"],
                   "described": sorted(name for name in ds.data_vars if "description" not in ds[name].attrs),
                   "status": [str(s) for s in ds["status"].values], "finished": str(ds["finished_at"].dtype),
                   "conv1": float(ds["params"].sel(gene="conv1.weight")[0])}
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ind["format_version"] = int(ds.attrs["format_version"])
        print(json.dumps({"dims": dims, "individuals": ind}))
    """, str(any_file))
    seen = json.loads(out)
    assert not any(d.startswith("phony_dim") for names in seen["dims"].values() for d in names), seen["dims"]
    ind = seen["individuals"]
    assert ind["params"] == ["row", "gene"] and ind["blocks"] == ["row", "layer"]
    run = results.open(any_file)
    assert ind["genes"] == run.gene_names and ind["units"] == "bits" and ind["described"] == []
    assert ind["status"] == list(run.individuals["status"]) and ind["finished"].startswith("datetime64")
    assert ind["conv1"] == run.individuals["params"][0, 1] and ind["format_version"] == 2
    assert seen["dims"]["generations"] == ["member", "row"] and seen["dims"]["genes"] == ["gene"]


# -- the Python API -----------------------------------------------------------------------------------------------
def test_api_gives_header_tables_units_front_and_hypervolume(run_file):
    run = results.open(run_file)
    assert run.format_version == 2 and run.header.problem == "quantization_problem" and run.header.pop_size == 6
    assert run.workload.name == run.header.workload_name
    ind, failed = run.individuals, run.count - 1
    assert ind.rows == run.count and ind["params"].shape == (run.count, 10) and ind["status"][failed] == "failed"
    assert len(ind["error"][-1].encode()) == 2048 and FAILED_ERROR.startswith(ind["error"][-1])  # cut to the column
    assert ind.units["cost"] == "bits" and ind.units["eval_seconds"] == "s" and "genome" not in ind.units
    for table in (ind, run.baseline, run.generations, *run.follow_ups.values()):
        assert set(table.descriptions) == set(table), table.name
    assert ind.labels["params"] == run.gene_names and ind.labels["blocks_created"] == run.layer_names
    assert set(run.follow_ups) == {"reevaluations", "retraining", "sensitivity"} and run.table("retraining").rows == 2
    front = run.pareto()
    assert len(front) and failed not in front and list(ind["cost"][front]) == sorted(ind["cost"][front])
    assert len(run.hypervolume()) == 2 and np.all(run.cumulative_hypervolume() >= run.hypervolume() - 1e-12)
    frame = run.to_pandas()
    assert frame.index.name == "row" and len(frame) == run.count
    assert list(frame["params[conv1.weight]"]) == pytest.approx(list(ind["params"][:, 1]), nan_ok=True)
    assert list(frame["objectives[cost]"]) == list(ind["cost"])
    assert len(run.to_pandas("generations").columns) == 5 + 6  # population spread over its 6 members
    with pytest.raises(UserError, match="no table 'nosuch'"):
        run.table("nosuch")


def test_to_pandas_without_pandas_says_how_to_get_it(run_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(UserError, match=r"qsx-batch\[pandas\]"):
        results.open(run_file).to_pandas()


# -- exports ------------------------------------------------------------------------------------------------------
def _reject(constant: str):
    raise ValueError(f"not JSON: {constant}")


def test_exports_of_a_failed_individual_are_valid(run_file, tmp_path):
    json_path, csv_path = tmp_path / "all.json", tmp_path / "all.csv"
    assert main(["inspect", str(run_file), "--json", str(json_path), "--csv", str(csv_path)]) == 0
    records = json.loads(json_path.read_text(), parse_constant=_reject)
    failed = records[-1]
    assert failed["status"] == "failed" and failed["conv1.weight"] is None and failed["accuracy"] == 0.0
    assert all(isinstance(r["conv1.weight"], int) for r in records[:-1])  # bit widths stay integers
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[-1]["conv1.weight"] == "" and rows[-1]["status"] == "failed" and float(rows[0]["conv1.weight"]) > 0


# -- reading while a writer appends -------------------------------------------------------------------------------
def test_one_reader_handle_sees_rows_and_text_as_they_are_committed(run_file, tmp_path):
    copy = shutil.copy(run_file, tmp_path / "live.h5")
    template, added = results.open(copy).individuals, 20
    stored = template.rows
    with open_for_append(copy) as writer:  # SWMR mode, as during a run
        reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import json, sys, time
            from qsx_batch.store import open_for_reading, read_table
            target, seen, counts = int(sys.argv[2]), {}, set()
            with open_for_reading(sys.argv[1]) as f:  # one handle for the whole run
                print("ready", flush=True)
                deadline = time.time() + 120
                while len(seen) < target and time.time() < deadline:
                    table = read_table(f, "individuals")
                    seen.update({i: (table["error"][i], table["host"][i]) for i in range(table.rows)})
                    counts.add(table.rows)
                    time.sleep(0.01)
            print(json.dumps({"seen": seen, "counts": len(counts)}))
        """), str(copy), str(stored + added)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        for i in range(added):
            result = IndividualResult(
                genome=template["genome"][0], params=template["params"][0], accuracy=0.5, correct=100, samples=200,
                cost=40.0, blocks_total=template["blocks_total"][0], blocks_already=template["blocks_already"][0],
                blocks_created=template["blocks_created"][0], eval_seconds=0.01, host=f"host-{i}", device="cpu",
                status=Status.FAILED, error=f"error {i}")
            writer.append_individual(result, generation=2, fitness=(-0.5, 40.0), constraint=0.0)
            writer.commit()  # a row at a time (the run commits once a second: see the next test)
            time.sleep(0.05)
        out, err = reader.communicate(timeout=150)
    assert reader.returncode == 0, err
    report = json.loads(out)
    seen = {int(k): tuple(v) for k, v in report["seen"].items()}
    assert [seen[stored + i] for i in range(added)] == [(f"error {i}", f"host-{i}") for i in range(added)]
    assert report["counts"] > 2  # it read while rows arrived, not once at the end



def test_held_rows_are_committed_within_commit_seconds_and_survive_sigkill(run_file, tmp_path):
    """A writer process holds rows for batched commits; its commit thread writes them within COMMIT_SECONDS with no
    further call, so a SIGKILL after that loses none, and a SWMR reader saw them arrive in more than one batch."""
    copy = shutil.copy(run_file, tmp_path / "killed.h5")
    stored, added = results.open(copy).count, 12
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from qsx_batch import results
        from qsx_batch.evaluation.record import IndividualResult
        from qsx_batch.store import open_for_append
        from qsx_batch.store.writer import COMMIT_SECONDS
        template = results.open(sys.argv[1]).individuals
        writer = open_for_append(Path(sys.argv[1]))
        print("opened", flush=True)  # in SWMR mode: readers may open the file now, not before
        for i in range(int(sys.argv[2])):
            result = IndividualResult(
                genome=template["genome"][0], params=template["params"][0], accuracy=0.5, correct=100,
                samples=200, cost=40.0, blocks_total=template["blocks_total"][0],
                blocks_already=template["blocks_already"][0], blocks_created=template["blocks_created"][0],
                eval_seconds=0.2, host=f"host-{i}", device="cpu", error=f"row {i}")
            writer.append_individual(result, generation=2, fitness=(-0.5, 40.0), constraint=0.0)
            time.sleep(0.2)  # an evaluation
        time.sleep(COMMIT_SECONDS + 1.0)
        print("appended", flush=True)
        time.sleep(600)  # killed here, never closed
    """), str(copy), str(added)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    counts = set()
    try:
        assert writer.stdout.readline().strip() == "opened", writer.stderr.read()
        deadline = time.time() + 120
        while time.time() < deadline and writer.poll() is None:
            try:
                with h5py.File(copy, "r", swmr=True) as f:
                    counts.add(int(f["individuals/count"][()]))
            except OSError:  # a reader may catch the file mid-flush: try again
                pass
            if max(counts, default=0) >= stored + added:
                break
            time.sleep(0.05)
        assert writer.stdout.readline().strip() == "appended", writer.stderr.read()
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -9
    kept = results.open(copy)
    assert kept.count == stored + added
    assert list(kept.individuals["error"][stored:]) == [f"row {i}" for i in range(added)]
    assert len({c for c in counts if stored < c < stored + added}) >= 1  # rows arrived in batches while it ran


# -- format 1 -----------------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_version_1_file_opens_and_inspects(tmp_path, capsys):
    copy = shutil.copy(VERSION_1, tmp_path / "v1.h5")
    run = results.open(copy)  # left by a killed writer: read through SWMR
    assert run.format_version == 1 and run.count == 15 and run.generations.rows == 2
    assert run.header.maximize_cost is False and run.header.integer is True and run.header.pop_size == 6
    assert run.individuals["params"].shape == (15, 10) and set(run.individuals["status"]) == {"ok"}
    assert run.individuals.units["cost"] == "bits" and list(run.to_pandas().columns)[0] == "genome[conv1.input]"
    assert main(["inspect", str(copy), "--hypervolume"]) == 0
    assert "evaluated  15 individuals (0 failed) in 2 generations" in capsys.readouterr().out
    assert _sha(copy) == _sha(VERSION_1)


def test_version_1_file_takes_follow_ups_and_resumes(tmp_path, monkeypatch):
    """The version-1 fixture was killed mid-run: evaluate recovers it and appends a new table, then --resume
    finishes the run in the version-1 tables."""
    copy = shutil.copy(VERSION_1, tmp_path / "v1.h5")
    before = results.open(copy)
    # the stored workload names ../weights/lenet5_mnist.pt: the weights shipped when the fixture was written
    (tmp_path / "weights").symlink_to(VERSION_1.parent / "weights-04756ac")
    (tmp_path / "wl").mkdir()
    workload = tmp_path / "wl" / "workload.yaml"
    workload.write_text(before.header.workload_yaml)
    monkeypatch.chdir(tmp_path)  # its results folder (the calibration) is relative
    assert main(["evaluate", str(copy), "--index", "3", "--dataset", "exploration", "--workload", str(workload)]) == 0
    assert main(["explore", str(workload), "--resume", str(copy)]) == 0
    after = results.open(copy)
    assert after.format_version == 1 and after.generations.rows == 4 and after.count > before.count
    assert np.array_equal(after.individuals["genome"][:15], before.individuals["genome"])
    assert len({tuple(g) for g in after.individuals["genome"]}) == after.count
    again = after.table("reevaluations")
    assert list(again["individual"]) == [3] and list(again["dataset"]) == ["exploration.datasets.exploration"]
    assert again["accuracy"][0] == pytest.approx(before.individuals["accuracy"][3], abs=0.05)  # another machine


def test_every_column_is_documented():
    text = (Path(__file__).parents[1] / "docs" / "results-format.md").read_text()
    for table, columns in TABLE_COLUMNS.items():
        assert f"`/{table}" in text, table
        for column in columns:
            assert f"`{column}`" in text, (table, column)
