"""``qsx-batch plot`` on tiny real quantization and sparsity runs: files written, readable, labelled."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from conftest import tiny_workload_dict, write_workload

from qsx_batch import results
from qsx_batch.cli import main
from qsx_batch.results.plots import front_bits_figure, pareto_figure


def _run(tmp_path_factory, problem: str):
    tmp = tmp_path_factory.mktemp(problem)
    out = tmp / f"{problem}.h5"
    assert main(["explore", str(write_workload(tmp, tiny_workload_dict(problem, tmp))), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def quant_run(tmp_path_factory):
    return _run(tmp_path_factory, "quantization")


@pytest.fixture(scope="module")
def sparsity_run(tmp_path_factory):
    return _run(tmp_path_factory, "sparsity")


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    return _run(tmp_path_factory, "joint")


def _check_images(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    for path in paths:
        assert path.stat().st_size > 1000
        if path.suffix == ".png":
            image = matplotlib.image.imread(path)
            assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0  # not a blank canvas
        else:
            assert path.read_bytes().startswith(b"%PDF")


def test_plot_quantization_run_writes_png_and_pdf(quant_run, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["plot", str(quant_run), "--out", str(out)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    _check_images(sorted(out.iterdir()), [f"quantization-{n}.{e}" for n in ("pareto", "hypervolume", "front-bits")
                                          for e in ("png", "pdf")])
    assert sorted(printed) == sorted(str(p) for p in out.iterdir())


def test_plot_sparsity_run_draws_thresholds_and_blocks(sparsity_run, tmp_path):
    out = tmp_path / "figures"
    assert main(["plot", str(sparsity_run), "--out", str(out), "--formats", "png"]) == 0
    _check_images(sorted(out.iterdir()), [f"sparsity-{n}.png" for n in ("pareto", "hypervolume", "front-sparsity")])


def test_plot_joint_run_draws_bits_and_sparsity_of_its_genes(joint_run, tmp_path):
    out = tmp_path / "figures"
    assert main(["plot", str(joint_run), "--out", str(out), "--formats", "png"]) == 0
    _check_images(sorted(out.iterdir()), [f"joint-{n}.png" for n in ("pareto", "hypervolume", "front-bits",
                                                                      "front-sparsity")])
    run = results.open(joint_run)
    columns = run.param_columns()
    assert [run.gene_names[i] for i in columns["weight_bits"]] == [f"{n}.weight.bits" for n in run.layer_names]
    assert [run.gene_names[i] for i in columns["threshold"]] == [f"{n}.input.threshold" for n in run.layer_names]


def test_figures_carry_units_legend_title_and_the_front(quant_run):
    run = results.open(quant_run)
    fig = pareto_figure(run)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "bits_weighted_linear [bits]" and "[fraction of samples]" in ax.get_ylabel()
    assert fig.get_suptitle().startswith(f"{run.header.workload_name}: accuracy vs bits_weighted_linear")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front" in legend and "fp32 accuracy" in legend
    front_line = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    front = run.pareto()
    assert np.allclose(front_line.get_xdata(), run.individuals["cost"][front])
    bits = front_bits_figure(run, max_lines=10)
    inputs, weights = bits.axes[:2]
    assert inputs.get_ylabel() == "input bits [bits]" and weights.get_ylabel() == "weight bits [bits]"
    first = inputs.get_lines()[0]
    assert list(first.get_ydata()) == list(run.individuals["params"][front[0], 0::2])


def test_plot_into_an_unwritable_place_is_a_clear_error(quant_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["plot", str(quant_run), "--out", str(blocker / "sub")]) == 2
    assert "Cannot write plots" in capsys.readouterr().err
