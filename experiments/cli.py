"""The ``gridsim`` command line. Bad input exits with code 2 and a message naming the problem."""

from __future__ import annotations

import argparse
import ast
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from experiments import compile_cache


def _parse_option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _seed(text: str) -> int:
    from experiments.spec import SEED_RANGE, seed_in_range

    value = int(text)
    if not seed_in_range(value):
        raise argparse.ArgumentTypeError(f"a seed lies in {SEED_RANGE}, got {value}")
    return value


def _options(pairs) -> dict:
    return dict(pairs or [])


def cmd_envs(args) -> int:
    import gridsim

    for name in sorted(gridsim.registered()):
        env, params = gridsim.make(name)
        print(f"{name}")
        print(f"    {env.description}")
        print(f"    true goal: {env.true_goal}    proxies: {', '.join(env.proxies)}")
        print(f"    events: {', '.join(env.event_names)}")
        print(
            f"    grid {env.height}x{env.width}, observation {env.observation_space(params).shape}, "
            f"{env.num_actions} actions, max_steps_in_episode {int(params.max_steps_in_episode)}"
        )
    return 0


def cmd_show(args) -> int:
    import jax

    import gridsim
    from gridsim.render import episode_gif, level_sheet

    if not 1 <= args.n <= 64:
        raise ValueError(f"--n must lie in [1, 64] (levels per row), got {args.n}")
    env, params = gridsim.make(args.env, **_options(args.option))
    train = params.train(alpha=args.alpha)
    key = jax.random.key(args.seed)
    out = args.out or f"{args.env.replace(':', '_').replace('/', '_')}.png"
    path = level_sheet(env, train, params.test(), key, out, n=args.n)
    print(f"wrote {path}")
    if args.gif:
        policy, name = (gridsim.random_policy(env), "random policy") if args.policy == "random" else (
            gridsim.oracles.policy(env, args.policy), f"oracle of {args.policy}")
        info = episode_gif(env, params.test(), policy, key, args.gif)
        print(f"wrote {args.gif} ({name}, outcome {env.outcome_names[int(info['outcome'])]})")
    return 0


def cmd_calibrate(args) -> int:
    import gridsim
    from experiments import memory
    from experiments.calibrate import calibrate, format_calibration
    from experiments.inspection import check_episodes

    check_episodes(args.episodes)
    env, params = gridsim.make(args.env, **_options(args.option))
    levels = params.train(alpha=args.alpha)
    needed = memory.evaluation_bytes(env, levels, args.episodes, int(np.asarray(levels.max_steps_in_episode)), False)
    memory.refuse_beyond_device(needed, "--episodes", f"playing {args.episodes:,} test episodes at once")
    print(format_calibration(env, calibrate(env, params, args.episodes, args.seed, args.alpha)))
    return 0


def _quantiles(values) -> str:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "     -"
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    return f"{q50:6.1%}  [{q10:6.1%} .. {q90:6.1%}]"


TRAIN_FLAGS = {"seeds": "--seeds", "seed": "--seed", "eval.episodes": "--eval-episodes"}  # in messages


def train_spec(args):
    """``gridsim train``'s settings as a one-point sweep: the same agents as a sweep file would train."""
    from agents import ppo
    from experiments import spec as sweep_spec

    options = _options(args.option)
    if "level_seed" in options:
        raise ValueError(f"-o level_seed: {sweep_spec.LEVEL_SEED_IS_PER_AGENT}")
    overrides = dict(total_timesteps=args.steps, num_envs=args.num_envs, encoder=args.encoder)
    config = ppo.Config(**{k: v for k, v in overrides.items() if v is not None})
    return sweep_spec.one_point(args.env, options, {"alpha": args.alpha}, args.seeds, args.seed, config,
                                args.eval_episodes, names=TRAIN_FLAGS)


def cmd_train(args) -> int:
    from tqdm import tqdm

    import gridsim
    from experiments import metrics
    from experiments.plan import check_memory
    from experiments.runner import run_chunk

    if args.segments < 1:
        raise ValueError(f"--segments must be >= 1, got {args.segments}")
    spec = train_spec(args)
    check_memory(spec, names=TRAIN_FLAGS)
    env, _ = gridsim.make(spec.env_reference, **spec.env_options)
    total = spec.ppo.steps_per_seed * spec.seeds
    with tqdm(total=total, unit="step", unit_scale=True, desc=f"{spec.seeds} seeds") as bar:
        table = run_chunk(spec, [0], on_progress=bar.update, segments=args.segments).tables[0].to_pandas()
    print(f"\n{env.name}, alpha={args.alpha:g}: {spec.seeds} seeds x {spec.ppo.steps_per_seed:,} steps")
    print("per-seed rates: median  [10% .. 90% quantile]")
    print(f"  train success (greedy)          {_quantiles(table.train_success)}")
    for name in env.outcome_names:
        print(f"  test {name:<26} {_quantiles(metrics.rate(table[f'test_{name}'], table.distinguishing_episodes))}")
    print(f"  (test rates over distinguishing levels, median {int(table.distinguishing_episodes.median())}"
          f" of {spec.eval_episodes} episodes per seed)")
    unrated = int((table.distinguishing_episodes == 0).sum())
    if unrated:
        print(f"  {unrated} of {spec.seeds} seeds had no distinguishing test episode (no rate; left out)")
    if table.diverged.any():
        print(f"  {int(table.diverged.sum())} seed(s) diverged (non-finite loss) and stopped learning")
    return 0


def cmd_sweep(args) -> int:
    import dataclasses

    from experiments import spec as sweep_spec
    from experiments import sweep
    from experiments.executors import executor
    from experiments.plots import plot
    from experiments.report import format_summary, load, summarize
    from experiments.store import Store

    spec = sweep_spec.load(args.file)
    if args.out:
        spec = dataclasses.replace(spec, out=Path(args.out))
    figures = Store(spec.out).figures(args.figures)  # refused now, not after the sweep
    run_on = executor(args.executor, args.address)
    run_on.prepare()
    try:
        out = sweep.run(spec, force=args.force, executor=run_on)
    except KeyboardInterrupt:
        done = len(Store(spec.out).point_files())
        print(f"\ngridsim: interrupted: {done} of {len(spec.points)} sweep points are done and kept in {spec.out}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    table, swept, _ = load(out)
    print(format_summary(summarize(table, swept), swept))
    for path in plot(out, figures):
        if path.suffix == ".png":
            print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from experiments.report import format_summary, load, summarize

    table, swept, _ = load(args.directory)
    print(format_summary(summarize(table, swept), swept))
    return 0


def cmd_plot(args) -> int:
    from experiments.plots import plot

    for path in plot(args.directory, args.out):
        print(f"wrote {path}")
    return 0


def cmd_compare(args) -> int:
    from experiments.plots import compare, load_sweep, training_label
    from experiments.report import format_comparison

    sweeps = [load_sweep(d, args.all_seeds) for d in args.directories]  # each refused, naming it, before drawing
    print(format_comparison([(f"{s.directory.name}: {training_label(s)}", s.summary, s.swept) for s in sweeps],
                            [s.table for s in sweeps], args.all_seeds))
    if args.all_seeds:
        print("rates over every seed that did not diverge, capable or not")
    for path in compare(args.directories, args.out, args.all_seeds):
        if path.suffix == ".png":
            print(f"wrote {path}")
    return 0


def cmd_inspect(args) -> int:
    from experiments.inspection import inspect

    for path in inspect(args.directory, args.point, args.seed, args.episodes, args.out):
        print(f"wrote {path}")
    return 0


def cmd_discover(args) -> int:
    from experiments.discover import RESULTS, agent_figure, format_shares, run
    from experiments.store import Store

    if args.agent is not None:
        point, seed = args.agent
        path = agent_figure(args.directory, point, seed, args.episodes, args.seed,
                            declared_proxies=args.declared_proxies)
        print(f"wrote {path}")
        return 0
    table = run(args.directory, args.episodes, args.seed, args.declared_proxies)
    print(format_shares(table))
    print(f"wrote {Store(args.directory).derived_path(RESULTS)}")
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def cmd_search(args) -> int:
    from experiments import search as level_search
    from experiments.store import Store
    from gridsim.search import Config

    config = Config(population=args.population, generations=args.generations, max_edits=args.max_edits,
                    edits=args.edits, start=args.start, nearest_steps=args.nearest_steps, branch=args.branch)
    store = Store(args.directory)
    save = _figures_writer(store, args.figures)
    table = level_search.run(args.directory, args.objective, config, args.seed, _options(args.option))
    print(level_search.format_summary(table))
    print(f"wrote {store.derived_path(level_search.RESULTS)}")
    level_search.figures(args.directory, save)
    return 0


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales are comma-separated numbers, got {text!r}") from None


def _figures_writer(store, out):
    """``save(fig, stem)`` into the figures folder (refused now, not after the work), printing each path."""
    from experiments.plots import save_figure

    figures = store.figures(out)

    def save(fig, stem):
        figures.mkdir(parents=True, exist_ok=True)
        print(f"wrote {save_figure(fig, figures, stem)[0]}")  # and an SVG beside it, as gridsim plot's

    return save


def cmd_probe(args) -> int:
    from experiments import probe
    from experiments.store import Store

    store = Store(args.directory)
    save = _figures_writer(store, args.figures)
    table, warning = probe.run(args.directory, args.episodes, args.rows, args.ridge, args.levels, args.seed)
    print(probe.format_summary(probe.sweep_env(args.directory), table, warning))
    print(f"wrote {store.derived_path(probe.RESULTS if args.levels == 'train' else probe.TEST_RESULTS)}")
    if warning is not None:
        print(f"wrote {store.derived_path(probe.WARNING)}")
    probe.figures(args.directory, save)
    return 0


def cmd_steer(args) -> int:
    from experiments import steer
    from experiments.store import Store

    store = Store(args.directory)
    save = _figures_writer(store, args.figures)
    table = steer.run(args.directory, args.layer, args.scales, args.vector_episodes, args.episodes, args.seed)
    print(steer.format_summary(table))
    print(f"wrote {store.derived_path(steer.RESULTS)}")
    steer.figures(args.directory, save)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsim", description=__doc__)
    parser.add_argument("--no-compile-cache", action="store_true",
                        help=f"do not keep compiled programs between runs (default: kept in {compile_cache.where()})")
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="list environments with their true goal and proxies")
    envs.set_defaults(run=cmd_envs)

    show = sub.add_parser("show", help="PNG sheet of sampled train levels beside test levels")
    show.add_argument("env", help="registered name, or module:attribute / file.py:attribute")
    show.add_argument("--alpha", type=float, default=None, help="training mixture fraction (default: the env's)")
    show.add_argument("--n", type=int, default=8, help="levels per row")
    show.add_argument("--seed", type=_seed, default=0)
    show.add_argument("--out", help="PNG path (default: ENV.png)")
    show.add_argument("--gif", help="also write a GIF of a test episode here")
    show.add_argument("--policy", default="random",
                      help="who plays the GIF's episode: 'random', or a goal's name for its oracle (default: random)")
    show.add_argument(
        "--option", "-o", action="append", type=_parse_option, metavar="KEY=VALUE",
        help="env option or param override, e.g. -o corner_size=3 -o height=11 (repeatable)",
    )
    show.set_defaults(run=cmd_show)

    calibrate = sub.add_parser(
        "calibrate", help="outcome rates of the true-goal oracle, each proxy's oracle and a random walk on test levels")
    calibrate.add_argument("env", help="registered name, or module:attribute / file.py:attribute")
    calibrate.add_argument("--episodes", type=int, default=4096, help="test levels to play (default 4096)")
    calibrate.add_argument("--alpha", type=float, default=1.0,
                           help="the level distribution's mixture fraction (default 1: the test distribution)")
    calibrate.add_argument("--seed", type=_seed, default=0)
    calibrate.add_argument("--option", "-o", action="append", type=_parse_option, metavar="KEY=VALUE",
                           help="env option or param override (repeatable)")
    calibrate.set_defaults(run=cmd_calibrate)

    train = sub.add_parser("train", help="train PPO seeds on the training distribution, evaluate at test")
    train.add_argument("env", help="registered name, or module:attribute / file.py:attribute")
    train.add_argument("--alpha", type=float, default=0.0,
                       help="fraction of training levels drawn from the test distribution")
    train.add_argument("--seeds", type=int, default=8)
    train.add_argument("--steps", type=int, default=None, help="env steps per seed (default: ppo.Config's)")
    train.add_argument("--num-envs", type=int, default=None, help="parallel envs per seed")
    train.add_argument("--encoder", choices=("mlp", "cnn"), default=None)
    train.add_argument("--segments", type=int, default=20, help="progress updates (and compiled segments)")
    train.add_argument("--eval-episodes", type=int, default=256)
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--option", "-o", action="append", type=_parse_option, metavar="KEY=VALUE",
                       help="env option or param override (repeatable)")
    train.set_defaults(run=cmd_train)

    sweep = sub.add_parser("sweep", help="run or resume a seed sweep from a TOML file, then report and plot")
    sweep.add_argument("file", help="sweep file (schema in the README)")
    sweep.add_argument("--out", help="the sweep directory (default: the file's `out`, else runs/<name>)")
    sweep.add_argument("--force", action="store_true",
                       help="delete the directory's results, whatever sweep they are from, and start over")
    sweep.add_argument("--figures", help="where to write the figures (default: <out>/_figures)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where chunks run: this process (default), or Ray tasks")
    sweep.add_argument("--address", help="a running Ray cluster (e.g. ray://head:10001 or auto); "
                                         "without one, --executor ray starts a local Ray instance")
    sweep.set_defaults(run=cmd_sweep)

    report = sub.add_parser("report", help="table of misgeneralization rates with confidence intervals")
    report.add_argument("directory")
    report.set_defaults(run=cmd_report)

    plot = sub.add_parser("plot", help="figures (PNG and SVG) from a sweep directory")
    plot.add_argument("directory")
    plot.add_argument("--out", help="where to write the figures (default: <directory>/_figures)")
    plot.set_defaults(run=cmd_plot)

    compare = sub.add_parser("compare", help="sweeps of one environment side by side (e.g. the same settings "
                                              "under different curricula): table and figure")
    compare.add_argument("directories", nargs="+", metavar="directory")
    compare.add_argument("--out", required=True, help="where to write the figure")
    compare.add_argument("--all-seeds", action="store_true",
                         help="rates over every seed, capable or not (default: capable seeds only)")
    compare.set_defaults(run=cmd_compare)

    inspect = sub.add_parser("inspect", help="one agent of a sweep: visitation heatmap and GIF of test episodes")
    inspect.add_argument("directory")
    inspect.add_argument("--point", type=int, default=0, help="sweep point (row order of `gridsim report`)")
    inspect.add_argument("--seed", type=_seed, default=0)
    inspect.add_argument("--episodes", type=int, default=256, help="test episodes for the heatmap")
    inspect.add_argument("--out", help="where to write the figures (default: <directory>/_figures)")
    inspect.set_defaults(run=cmd_inspect)

    discover = sub.add_parser("discover", help="for every agent of a sweep, the candidate goal that best explains "
                                                "its moves on distinguishing test levels, proxies not told")
    discover.add_argument("directory")
    discover.add_argument("--episodes", type=int, default=256, help="test episodes per agent (default 256)")
    discover.add_argument("--seed", type=_seed, default=0)
    discover.add_argument("--declared-proxies", action="store_true",
                          help="also score the environment's declared proxies (default: only the true goal)")
    discover.add_argument("--agent", type=int, nargs=2, metavar=("POINT", "SEED"),
                          help="instead, draw one agent's test episodes beside its best candidate's target")
    discover.set_defaults(run=cmd_discover)

    search = sub.add_parser("search", help="for every agent of a sweep, search levels (by ACCEL's edits) for those "
                                            "that expose it, beside as many random test levels")
    search.add_argument("directory")
    search.add_argument("--objective", default="regret",
                        help="what exposes an agent: regret (its exact regret; the default), proxy:NAME (it reaches "
                             "that declared proxy first where the oracles separate it from the true goal), or "
                             "discovered (it ends on the target `gridsim discover` named for it)")
    search.add_argument("--population", type=int, default=16, help="levels kept per agent (default 16)")
    search.add_argument("--generations", type=int, default=15,
                        help="rounds of edited children (default 15): population x (generations + 1) episodes "
                             "per agent, and as many random test levels")
    search.add_argument("--max-edits", type=int, default=3, help="a child is its parent with 1 to this many edits")
    search.add_argument("--edits", type=_names, default=None,
                        help="comma-separated edits to use (default: all the environment's, gridsim.edits)")
    search.add_argument("--start", choices=("test", "train", "both"), default="test",
                        help="where the first levels come from: test levels, the agent's own training levels, "
                             "or half each (default test)")
    search.add_argument("--nearest-steps", type=int, default=8,
                        help="single edits along each chain of the nearest-failure search (default 8)")
    search.add_argument("--branch", type=int, default=4, help="edits tried per chain and step (default 4)")
    search.add_argument("--seed", type=_seed, default=0)
    search.add_argument("--figures", help="where to write the figures (default: <directory>/_figures)")
    search.add_argument("--option", "-o", action="append", type=_parse_option, metavar="KEY=VALUE",
                        help="a param of the levels the search starts from and edits, e.g. -o watched=1 "
                             "(repeatable; the random test levels keep the sweep's)")
    search.set_defaults(run=cmd_search)

    probe = sub.add_parser("probe", help="linear probes on every layer of every agent of a sweep, and a warning "
                                          "before deployment: which agents will misgeneralize, from training levels")
    probe.add_argument("directory")
    probe.add_argument("--episodes", type=int, default=512,
                       help="episodes captured per agent (default 512): the probes fit on half, score the other half")
    probe.add_argument("--rows", type=int, default=1024, help="steps drawn from each half per agent (default 1024)")
    probe.add_argument("--ridge", type=float, default=1.0,
                       help="the ridge penalty per fitted step, on standardized activations (default 1)")
    probe.add_argument("--levels", choices=("train", "test"), default="train",
                       help="each agent's own training levels (default; the warning needs them) or test levels")
    probe.add_argument("--seed", type=_seed, default=0)
    probe.add_argument("--figures", help="where to write the figures (default: <directory>/_figures)")
    probe.set_defaults(run=cmd_probe)

    steer = sub.add_parser("steer", help="add a goal vector from each agent's training levels at one layer and see "
                                          "where it sends the agent on distinguishing test levels")
    steer.add_argument("directory")
    steer.add_argument("--layer", help="the layer to steer (default actor1, the policy's first layer)")
    steer.add_argument("--scales", type=_scales, default=(1.0, 4.0, 16.0, 64.0),
                       help="comma-separated multiples of the vector (default 1,4,16,64; 0 is always added)")
    steer.add_argument("--vector-episodes", type=int, default=4096,
                       help="training episodes averaged per agent for its vector (default 4096)")
    steer.add_argument("--episodes", type=int, default=256, help="test episodes per agent and scale (default 256)")
    steer.add_argument("--seed", type=_seed, default=0)
    steer.add_argument("--figures", help="where to write the figures (default: <directory>/_figures)")
    steer.set_defaults(run=cmd_steer)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"gridsim: warning: {message}\n"


def _interrupt_once(signum, frame):
    """The first Ctrl-C interrupts; later ones are ignored, so that they cannot break the first's
    clean-up (releasing the lock, saying what is kept) into a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv=None, restore_interrupt: bool = True) -> int:
    """Run one command; ``restore_interrupt``: give Ctrl-C its usual meaning back afterwards."""
    args = build_parser().parse_args(argv)
    ours = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if ours:
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        return _run(args)
    finally:
        if ours and restore_interrupt:  # a caller of main (a test, a notebook) gets its Ctrl-C back
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(args) -> int:
    if not args.no_compile_cache:
        compile_cache.enable()
    warnings.formatwarning = _one_line_warning  # a warning is a line for the user, not a source location
    try:
        return args.run(args)
    except BrokenPipeError:  # `gridsim envs | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except ValueError as err:
        print(f"gridsim: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only directory: say what happened, keep what was written
        where = f" ({err.filename})" if err.filename else ""
        kept = ("; finished sweep points are kept, and rerunning the same command resumes"
                if args.run is cmd_sweep else "")
        print(f"gridsim: error: {err.strerror or err}{where}{kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a sweep says what it kept (cmd_sweep); elsewhere nothing is half-written
        print("\ngridsim: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``gridsim`` command. An interrupted run leaves at once, skipping the interpreter's
    teardown: XLA may still be compiling in its threads, and tearing down under them can crash."""
    code = main(restore_interrupt=False)  # a Ctrl-C after the first stays ignored until the process exits
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
