"""The NSGA-II search driven through pymoo's ask/tell interface, shared by ``explore`` and ``launch``.

Each generation the algorithm proposes genomes; genomes already evaluated in this run (or in the results file
being resumed) come from the cache; the rest go to an executor, and every result is appended to the results
file the moment it arrives. The seed fixes the whole sequence, so a resumed run proposes the same genomes and
finds them in the cache.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.problem import Problem as PymooProblem
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import FloatRandomSampling, IntegerRandomSampling
from pymoo.problems.static import StaticProblem
from tqdm import tqdm

from ..errors import UserError
from ..evaluation.metrics import check_racing
from ..evaluation.racing import RaceContext, pack_hits
from ..evaluation.record import IndividualResult, Status, genome_key
from ..executors.base import BASELINE_STAGE, EvalRequest, Executor, Stage
from ..problems import Problem
from ..results.pareto import hypervolume, pareto_mask, usable
from ..store import ResultsWriter, RunHeader, ok_results
from ..store.format import SENSITIVITY
from ..versions import package_versions
from ..workload import NsgaSpec, Workload
from .initial_population import given_genomes, new_run_start, run_start
from .sensitivity import measure_sensitivity


class StartingIndividuals(Sampling):
    """The first generation: the given genomes, then the random sample pymoo would draw without them (the same
    rows from the same seed), so a run with starting individuals only adds individuals to generation 0."""

    def __init__(self, genomes: np.ndarray, random: Sampling):
        super().__init__()
        self.genomes = np.asarray(genomes, dtype=float)
        self.random = random

    def _do(self, problem, n_samples, random_state=None, **kwargs):
        drawn = self.random._do(problem, n_samples, random_state=random_state, **kwargs)
        return np.vstack([self.genomes.astype(drawn.dtype), drawn])


def make_algorithm(nsga: NsgaSpec, integer: bool, first: np.ndarray | None = None) -> NSGA2:
    """NSGA-II with SBX crossover and polynomial mutation (rounded for integer genes), duplicates eliminated;
    ``first``: genomes put into the first generation besides the random ones."""
    repair = {"repair": RoundingRepair()} if integer else {}
    sampling = IntegerRandomSampling() if integer else FloatRandomSampling()
    return NSGA2(
        pop_size=nsga.pop_size,
        n_offsprings=nsga.offsprings or nsga.pop_size,
        sampling=sampling if first is None or not len(first) else StartingIndividuals(first, sampling),
        crossover=SBX(prob=nsga.crossover_prob, eta=nsga.crossover_eta, vtype=float, **repair),
        mutation=PM(prob=nsga.mutation_prob, eta=nsga.mutation_eta, vtype=float, **repair),
        eliminate_duplicates=True,
    )


def run_header(workload: Workload, problem: Problem, metric_names: list[str]) -> RunHeader:
    """The fixed description of a run written into a new results file."""
    lower, upper = problem.bounds
    return RunHeader(
        workload_name=workload.name, workload_sha256=workload.sha256, workload_yaml=workload.text,
        workload_path=str(workload.path),
        problem=problem.name, seed=workload.spec.seed, cost_name=problem.cost_name, cost_unit=problem.cost_unit,
        maximize_cost=problem.maximize_cost, integer=problem.integer, gene_names=problem.gene_names,
        lower=lower, upper=upper, layer_names=problem.layer_names,
        layer_kinds=[layer.kind for layer in problem.layers], layer_params=[layer.params for layer in problem.layers],
        layer_macs=[layer.macs for layer in problem.layers],
        layer_input_shapes=["x".join(map(str, layer.input_shape)) for layer in problem.layers],
        pop_size=workload.spec.exploration.nsga.pop_size, versions=package_versions(),
        worst_cost=problem.worst_cost(), max_blocks_per_sample=problem.blocks_per_sample(),
        metric_names=metric_names, initial_population=new_run_start(workload.spec, problem),
    )


@dataclass
class SearchOptions:
    skip_baseline: bool = False
    progress: bool = False
    verbose: bool = False
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


@dataclass
class _Scored:
    row: int
    fitness: tuple[float, float]
    constraint: float
    samples: int
    seconds: float
    objectives: tuple[float, float]
    status: str


class Search:
    """One run: baseline, then ``generations`` rounds of ask, evaluate (cache first), store, tell."""

    def __init__(self, workload: Workload, problem: Problem, executor: Executor, writer: ResultsWriter,
                 options: SearchOptions):
        self.workload = workload
        self.problem = problem
        self.executor = executor
        self.writer = writer
        self.options = options
        self.cache: dict[tuple, _Scored] = {}
        self.hits: dict[tuple, tuple] = {}  # racing: per genome its packed per-label hits (kept in memory only)
        self.bounds: np.ndarray | None = None  # lowest accuracy per metric ([0]: the accuracy objective)
        self.stored_generations = 0
        check_racing(workload.spec)
        self._load_stored()

    # -- state from the results file (resume) ---------------------------------------------------------------
    def _load_stored(self) -> None:
        ind = self.writer.read("individuals")
        for i, genome in enumerate(ind.get("genome", [])):
            self.cache[genome_key(genome)] = _Scored(i, tuple(ind["fitness"][i]), float(ind["constraint"][i]),
                                                    int(ind["samples"][i]), float(ind["eval_seconds"][i]),
                                                    tuple(ind["objectives"][i]), str(ind["status"][i]))
        # what the individuals table holds, kept up to date as rows are stored: a generation's record reads nothing
        self.stored_rows = ind.rows
        self.stored_seconds = float(np.sum(ind.get("eval_seconds", 0.0)))
        self.stored_samples = int(np.sum(ind.get("samples", 0)))
        self._load_sweep()
        self.stored_generations = len(self.writer.read("generations")["evaluated"])
        self.stored_minimum = self.writer.minimum_accuracy()
        base = self.writer.read("baseline")
        self.baseline_stored = set(zip(base["label"], base["dataset"]))

    def _load_sweep(self) -> None:
        """Results of the sensitivity sweep, reused when the search proposes one of its genomes (unless the sweep
        scored only a share of the samples), and what each of its points spent (raced-out ones too)."""
        table = self.writer.read(SENSITIVITY)
        whole = self.workload.spec.exploration.sensitivity.sample_fraction == 1
        self.swept = ok_results(table) if whole else {}
        self.sweep_spent = {genome_key(g): (float(s), int(n))
                            for g, s, n in zip(table["genome"], table["eval_seconds"], table["samples"])}

    def _sweep_only(self) -> tuple[float, int]:
        """Evaluation seconds and samples of the sweep's points the search did not take over (these count too):
        genomes it has not met, and raced-out ones it evaluated again."""
        only = [spent for key, spent in self.sweep_spent.items() if key not in self.cache or key not in self.swept]
        return float(sum(s for s, _ in only)), int(sum(n for _, n in only))

    # -- baseline ---------------------------------------------------------------------------------------------
    def run_baseline(self) -> None:
        """Evaluate the reference settings (fp32, all-upper-limit) not yet stored, unless skipped."""
        blocks = self.workload.spec.exploration.datasets
        datasets = ["exploration"] + (["baseline"] if blocks.baseline is not None else [])
        requests = [EvalRequest(genome, ds, label) for label, genome in self.problem.reference_genomes().items()
                    for ds in datasets]
        if self.options.skip_baseline:  # the fp32 accuracy is still needed for an allowable accuracy drop
            needed = self._drop() is not None
            requests = [EvalRequest(None, "exploration", "fp32")] if needed else []
        requests = [r for r in requests if (r.label, r.dataset) not in self.baseline_stored]
        if requests:
            for request, result, _ in self.executor.run(requests, BASELINE_STAGE):
                self.writer.append_baseline(request.label, request.dataset, result)
                self.options.log(f"baseline {request.label:>10} on {self.workload.dataset_label(request.dataset)}, "
                                 f"{result.samples} samples: accuracy {result.accuracy:.4f}"
                                 f"  {self.problem.cost_name} {result.cost:.6g}"
                                 + (f"  [{result.status}: {result.error}]" if not result.ok else ""))
        self._set_constraint()

    def _drop(self) -> tuple[str, float] | None:
        """The allowable accuracy drop relative to fp32 (``fraction`` or ``points``), when the workload sets one."""
        spec = self.workload.spec.exploration
        if spec.allowable_accuracy_drop is not None:
            return "fraction", spec.allowable_accuracy_drop
        if spec.allowable_absolute_accuracy_drop is not None:
            return "points", spec.allowable_absolute_accuracy_drop
        return None

    def _set_constraint(self) -> None:
        """The lowest accuracy per metric: fixed (``minimum_accuracy``), or from the fp32 baseline (an allowable
        drop) when the run started; the first metric's bound is stored in the results file."""
        spec = self.workload.spec.exploration
        drop = self._drop()
        if spec.minimum_accuracy is not None:
            self.bounds = np.atleast_1d(np.asarray(spec.minimum_accuracy, dtype=float))
        elif self.stored_minimum is not None:
            self.bounds = np.array([self.stored_minimum])
        elif drop is not None:
            base = self.writer.read("baseline")
            fp32 = [a for lab, ds, a in zip(base["label"], base["dataset"], base["accuracy"])
                    if lab == "fp32" and ds == "exploration"][0]
            kind, amount = drop
            self.bounds = np.array([fp32 * (1.0 - amount) if kind == "fraction" else fp32 - amount])
        if self.bounds is not None and self.stored_minimum is None:
            self.writer.set_minimum_accuracy(float(self.bounds[0]))
            self.stored_minimum = float(self.bounds[0])
            shown = ", ".join(f"{b:.4f}" for b in self.bounds)
            self.options.log(f"accuracy constraint: >= {shown}" if len(self.bounds) == 1 else
                             f"accuracy constraints, one per metric: >= {shown}")

    # -- scoring ----------------------------------------------------------------------------------------------
    def _score(self, result: IndividualResult) -> tuple[tuple[float, float], float]:
        """Fitness and constraint; a raced-out individual never competes with an optimistic bound: it counts at
        its accuracy's lower bound and as infeasible (below every feasible individual in NSGA-II's survival);
        a failed one gets the worst fitness."""
        if result.status == Status.RACED_OUT:
            bound = 1.0 if self.bounds is None else float(self.bounds[0])
            return self.problem.fitness(result.ci_low, result.cost), max(bound - result.ci_low, 1e-9)
        if not result.ok:
            return self.problem.fitness(0.0, self.problem.worst_cost()), 1.0
        else:
            metrics = result.metrics if len(result.metrics) else np.array([result.accuracy])
        if self.bounds is None:
            return self.problem.fitness(float(metrics[0]), result.cost), 0.0
        if len(metrics) < len(self.bounds):
            raise UserError(f"exploration.minimum_accuracy has {len(self.bounds)} bounds, but the accuracy function "
                            f"'{self.workload.spec.model.accuracy_function}' returns {len(metrics)} metric(s); give "
                            "one bound per metric.")
        constraint = float(np.max(self.bounds - metrics[: len(self.bounds)]))
        return self.problem.fitness(float(metrics[0]), result.cost), constraint

    def race_context(self) -> RaceContext | None:
        """The racing settings, the feasible front of everything stored so far and the latest generation's
        (cost, accuracy), which ``stages: auto`` plans on (None: racing off)."""
        racing = self.workload.spec.exploration.racing
        if not racing.enabled:
            return None
        ind = self.writer.read("individuals")
        front, history = np.zeros((0, 2)), np.zeros((0, 2))
        front_hits = history_hits = ()
        if len(ind["accuracy"]):
            mask = pareto_mask(ind["objectives"], self.problem.maximize_cost, usable(ind["constraint"], ind["status"]))
            front = ind["objectives"][mask][:, ::-1]
            latest = (ind["generation"] == ind["generation"].max()) & (ind["status"] != Status.FAILED)
            history = np.column_stack([ind["cost"][latest], ind["accuracy"][latest]])
            front_hits, history_hits = (tuple(self.hits.get(genome_key(g)) for g in ind["genome"][rows])
                                        for rows in (mask, latest))
        stages = None if racing.stages == "auto" else tuple(racing.stages)
        return RaceContext(stages, racing.confidence, None if self.bounds is None else float(self.bounds[0]), front,
                           self.problem.maximize_cost, history, front_hits, history_hits)

    def evaluate_generation(self, genomes: np.ndarray, generation: int) -> list[_Scored]:
        """Scores for every genome: cached ones at once, the rest through the executor (stored on arrival)."""
        keys = [genome_key(g) for g in genomes]
        pending: dict[tuple, EvalRequest] = {}
        race = self.race_context() if any(k not in self.cache for k in keys) else None
        for key, genome in zip(keys, genomes):
            if key not in self.cache and key in self.swept:  # evaluated by the sensitivity sweep: stored, not run
                self._store(self.swept[key], generation, 1)
            elif key not in self.cache and key not in pending:
                pending[key] = EvalRequest(np.asarray(genome, dtype=float), race=race)
        bar = tqdm(total=len(pending), desc=f"gen {generation}", unit="ind", leave=False,
                   disable=not self.options.progress or not pending)
        for _request, result, attempt in self.executor.run(list(pending.values()), Stage.generation(generation)):
            self._store(result, generation, attempt)
            bar.update(1)
        bar.close()
        missing = [k for k in keys if k not in self.cache]
        if missing:
            raise RuntimeError(f"{len(missing)} individuals of generation {generation} returned no result")
        return [self.cache[k] for k in keys]

    def _store(self, result: IndividualResult, generation: int, attempt: int) -> None:
        """Score one result, append it to the individuals and cache it."""
        fitness, constraint = self._score(result)
        row = self.writer.append_individual(result, generation, fitness, constraint, attempt)
        self.cache[genome_key(result.genome)] = _Scored(row, fitness, constraint, result.samples, result.eval_seconds,
                                                        (result.accuracy, result.cost), str(result.status))
        self.stored_rows = row + 1
        self.stored_seconds += result.eval_seconds
        self.stored_samples += result.samples
        if result.hits is not None:  # racing compares later individuals with this one, label by label
            self.hits[genome_key(result.genome)] = pack_hits(result.hits)
        if self.options.verbose:  # formatting the line costs more than storing the row
            self.options.log(f"gen {generation} #{row}: accuracy {result.accuracy:.4f} {self.problem.cost_name} "
                             f"{result.cost:.6g} params "
                             f"{np.array2string(result.params, precision=3, max_line_width=200)}"
                             + (f" [{result.status}: {result.error}]" if not result.ok else ""))

    def _record_generation(self, population: list[_Scored]) -> None:
        sweep_seconds, sweep_samples = self._sweep_only()
        hv = hypervolume(np.array([s.objectives for s in population]), np.array([s.constraint for s in population]),
                         np.array([s.status for s in population]), self.writer.header)
        self.writer.append_generation([s.row for s in population], self.stored_rows,
                                      self.stored_seconds + sweep_seconds, self.stored_samples + sweep_samples, hv)

    def starting_genomes(self) -> np.ndarray:
        """Generation 0 besides the random individuals: derived from the sensitivity sweep (measured first where
        the file lacks points of it) for a run started from ``sensitivity`` (:func:`run_start`), then the workload's
        own."""
        spec = self.workload.spec.exploration
        given = given_genomes(self.workload.spec, self.problem)
        if run_start(self.writer.header.initial_population, self.workload.spec, self.problem) != "sensitivity":
            return given
        sweep = measure_sensitivity(self.problem, self.executor, self.writer, self.workload.spec,
                                    self.options.progress, self.options.log)
        self._load_sweep()
        derived = sweep.starting_genomes(self.problem, spec.sensitivity.loss_budgets)
        self.options.log(f"sensitivity: {len(derived)} starting individuals for loss budgets "
                         f"{', '.join(f'{b:g}' for b in spec.sensitivity.loss_budgets)}")
        return np.vstack([derived, given])

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.run_baseline()
        nsga = self.workload.spec.exploration.nsga
        lower, upper = self.problem.bounds
        constrained = self.bounds is not None or self.workload.spec.exploration.racing.enabled  # raced: infeasible
        pproblem = PymooProblem(n_var=len(lower), n_obj=2, n_ieq_constr=1 if constrained else 0, xl=lower, xu=upper,
                                vtype=int if self.problem.integer else float)
        algorithm = make_algorithm(nsga, self.problem.integer, self.starting_genomes())
        algorithm.setup(pproblem, termination=("n_gen", nsga.generations), seed=self.workload.spec.seed, verbose=False)
        gen_bar = tqdm(total=nsga.generations, desc="generations", unit="gen", disable=not self.options.progress)
        for generation in range(nsga.generations):
            pop = algorithm.ask()
            scored = self.evaluate_generation(pop.get("X"), generation)
            F = np.array([s.fitness for s in scored], dtype=float)
            kwargs = {"G": np.array([[s.constraint] for s in scored])} if constrained else {}
            PymooEvaluator().eval(StaticProblem(pproblem, F=F, **kwargs), pop)
            algorithm.tell(infills=pop)
            survivors = [self.cache[genome_key(x)] for x in algorithm.pop.get("X")]
            if generation >= self.stored_generations:
                self._record_generation(survivors)
            gen_bar.update(1)
        gen_bar.close()
