"""Run or resume a sweep: plan its chunks, run them with an executor, keep the results in its store.

``experiments.runner`` says what a chunk computes, ``experiments.plan`` which points share one,
``experiments.executors`` where chunks run, ``experiments.store`` how results are kept; this module
only puts them together. A rerun skips the points already done, so a crash, Ctrl-C or a lost
machine costs at most the chunks in progress, and the final table equals an uninterrupted run's.
"""

from __future__ import annotations

from pathlib import Path

from experiments import provenance
from experiments.executors import LocalExecutor
from experiments.plan import plan, points_per_chunk
from experiments.runner import ChunkResult
from experiments.spec import SweepSpec
from experiments.store import Store


def run(spec: SweepSpec, force: bool = False, progress: bool = True, executor=None) -> Path:
    """Run (or resume) ``spec``; returns its directory."""
    from tqdm import tqdm

    executor = executor or LocalExecutor()
    store = Store(spec.out)
    manifest = provenance.manifest(spec)
    manifest["points_per_chunk"] = points_per_chunk(spec)  # for a new sweep; a resumed one keeps its own
    with store.writing(manifest, force) as done:
        todo = [i for i in range(len(spec.points)) if i not in done]
        pad_to = int(store.manifest().get("points_per_chunk", manifest["points_per_chunk"]))
        chunks = plan(todo, pad_to)
        steps_per_seed = spec.ppo.steps_per_seed
        label = f"{spec.name}: {len(todo)} of {len(spec.points)} points x {spec.seeds} seeds"
        with tqdm(total=len(todo) * spec.seeds * steps_per_seed, unit="step", unit_scale=True, desc=label,
                  disable=not progress) as bar:
            finished = 0
            bar.set_postfix_str(f"chunk 1/{len(chunks)}" if chunks else "")
            for result in executor.map(spec, chunks, pad_to, bar.update):
                _same_code(result, manifest["identity"])
                for i in result.points:
                    store.write_point(i, result.tables[i], result.curves[i], result.agents[i])
                store.record_chunk(result.record(executor.name))
                finished += 1
                bar.set_postfix_str(f"chunk {min(finished + 1, len(chunks))}/{len(chunks)}")
    return spec.out


def _same_code(result: ChunkResult, identity: dict) -> None:
    """Refuse a chunk computed by another gridsim (a cluster node with an older install)."""
    differ = [k for k, v in result.code.items() if identity.get(k) != v]
    if differ:
        raise ValueError(f"points {result.points} were computed on {result.host} by another gridsim "
                         f"({', '.join(differ)} differ from this machine's); install the same gridsim on every "
                         "node and run the sweep again (finished points are kept)")
