"""Discovery: moves valued by hand, oracles recovered exactly with the proxies hidden, and the
command on a sweep."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gridsim
from gridsim import discover, oracles
from gridsim.layouts import open_room
from gridsim.rollout import Policy, evaluate

UP, RIGHT, DOWN, LEFT = range(4)


def test_a_move_is_valued_by_the_steps_it_leaves_to_the_target():
    """5x7 open room, agent on (2, 1), coin on (2, 4); distances counted by hand. Left bumps the
    border and stays."""
    end_column = lambda level, params: jnp.zeros((5, 7), bool).at[:, 5].set(True)  # an author's own candidate
    env, params = gridsim.make("coin-at-end", height=5, width=7, extra_candidates={"end": end_column})
    cands = discover.candidates(env, params)
    level = env.make_level(open_room(5, 7), (2, 1), [(2, 4)], [True])
    pairs = discover._pair_distances(level.walls)
    targets = discover.candidate_costs(env, cands, level, level, params)
    q = np.asarray(discover._step_values(pairs, targets, discover._destinations(env, level)))
    row = lambda name: q[cands.names.index(name)].tolist()
    assert row("goal:coin") == [-5, -3, -5, -4]  # up, right, down, left: 4, 2, 4, 3 steps left
    assert row("kind:coin") == row("goal:coin")
    assert row("edge:right") == [-5, -4, -5, -5]  # column 5: 4, 3, 4, 4 steps left
    assert row("own:end") == row("edge:right")
    assert row("start") == [-2, -2, -2, -1]  # staying put is already there
    assert row("below:coin") == [-6, -4, -4, -5]  # (3, 4): 5, 3, 3, 4 steps left
    assert row("move:down") == [0, 0, 1, 0]


def test_a_state_met_again_is_scored_once_until_the_objects_change():
    """Two hand-built episodes pacing (2, 1) <-> (2, 2): five moves from four repeated states. With
    the coin fixed, two states are new (2 moves scored); with the coin gone from step 2 on, the world
    has changed, so (2, 1) and (2, 2) are new again there (4 moves scored)."""
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    cands = discover.candidates(env, params)
    cells, actions = [(2, 1), (2, 2), (2, 1), (2, 2), (2, 1)], [RIGHT, LEFT, RIGHT, LEFT, RIGHT]
    stack = lambda levels: jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *levels)
    episodes = [stack([env.make_level(open_room(5, 7), c, [(1, 5)], [t < coin_gone_at]) for t, c in enumerate(cells)])
                for coin_gone_at in (len(cells), 2)]
    levels = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs, axis=1), *episodes)  # [T, E]
    moves = jnp.tile(jnp.array(actions)[:, None], (1, 2))
    scores = discover.score(env, cands, params, levels, moves, jnp.ones((5, 2), bool))
    assert np.asarray(scores.steps).tolist() == [2, 4]
    assert np.asarray(scores.end_cell).tolist() == [2 * 7 + 2] * 2  # the last move, from (2, 1), ends on (2, 2)


def test_a_statistical_tie_goes_to_the_earlier_candidate():
    """Synthetic scores over four episodes of 10 moves: the third candidate is the most likely, the
    first within noise of it (their per-episode differences straddle 0), the second clearly behind;
    then the first is clearly behind too. Candidates 0-2 are the goal, a kind and an edge."""
    env, params = gridsim.make("coin-at-end", height=5, width=7)
    cands = discover.candidates(env, params)
    names = ["goal:coin", "kind:coin", "edge:right"]
    picked = [cands.names.index(n) for n in names]

    def verdict(first):
        ll = np.full((4, len(cands.names)), -14.0)  # a random walk: 10 moves at log(1/4)
        ll[:, picked] = np.stack([first, [-9.0, -9.2, -8.8, -9.0], [-6.0, -6.1, -5.9, -6.0]], axis=1)
        scores = discover.Scores(ll, np.ones(len(cands.names)), np.full(4, 10), np.full(4, -14.0),
                                 np.zeros((4, len(cands.names)), bool), np.zeros(4, np.int32))
        return discover.verdict(cands, scores, "coin")

    tie = verdict([-5.0, -7.5, -5.5, -6.5])  # 0.05 nats a step behind on average, within noise
    assert tie.best == "goal:coin" and tie.runner_up == "edge:right" and tie.margin_over_runner_up[0] < 0
    behind = verdict([-7.0, -7.1, -6.9, -7.0])  # 0.1 nats a step behind, every episode
    assert behind.best == "edge:right" and behind.runner_up == "goal:coin"


def _verdicts(name, goals, episodes=48, **options):
    """What discovery says of each named goal's oracle, and of a random walk (proxies hidden)."""
    env, params = gridsim.make(name, **options)
    test = params.test()
    cands = discover.candidates(env, params)
    max_steps = int(params.max_steps_in_episode)

    def scored(goal):  # goal -1: a random walk; one program for all
        oracle = oracles.indexed_policy(env, jnp.maximum(goal, 0)).act

        def act(key, obs, state, p, carry, first):
            move, carry = oracle(key, obs, state, p, carry, first)
            return jnp.where(goal < 0, jax.random.randint(key, (), 0, 4), move), carry

        result, trace = evaluate(env, test, Policy(act), jax.random.key(1), episodes, max_steps, trace=True)
        active = discover.scored_steps(env, trace.first_episode, result.distinguishing)
        return discover.score(env, cands, test, trace.state.level, trace.action, active)

    indices = jnp.array([env.goal_names.index(g) for g in goals] + [-1])
    scores = jax.device_get(jax.jit(jax.vmap(scored))(indices))
    pick = lambda i: jax.tree_util.tree_map(lambda x: x[i], scores)
    return cands, [discover.verdict(cands, pick(i), env.true_goal) for i in range(len(indices))]


def test_coin_oracles_are_recovered_exactly():
    cands, (coin, end, walk) = _verdicts("coin-at-end", ["coin", "end"], height=5, width=7)
    assert "goal:end" not in cands.names  # the proxy is not told
    assert coin.best == "goal:coin" and end.best == "edge:right" and walk.best == "unexplained"
    assert end.margin_over_true[1] > 0  # its lead over the true goal is clear of chance
    # on distinguishing levels each oracle's episodes end on its own goal and never on the other's
    assert (coin.ends_at_best, coin.ends_at_true) == (1.0, 1.0)
    assert (end.ends_at_best, end.ends_at_true) == (1.0, 0.0)


@pytest.mark.parametrize("name, proxy, expected, options", [
    ("cheese-in-corner", "corner", "corner:top-left:1x1", dict(height=7, width=7)),
    ("keys-and-chests", "hoarded_key", "kind:key", dict(height=7, width=7)),
])
def test_a_proxy_oracle_is_named_without_being_told(name, proxy, expected, options):
    env, _ = gridsim.make(name, **options)
    _, (true, proxy_oracle, _) = _verdicts(name, [env.true_goal, proxy], **options)
    assert true.best == f"goal:{env.true_goal}" and proxy_oracle.best == expected


def test_a_trained_agent_is_caught_pursuing_a_marker_nobody_declared():
    """examples/buried_treasure.py declares its treasure and no proxy; the treasure is unseen and lay
    just below a signpost in training. A quickly trained agent finds it on training levels, and on
    test levels, where the treasure lies elsewhere, discovery names the cell below the signpost."""
    from agents import ppo

    env, params = gridsim.make("examples/buried_treasure.py:BuriedTreasure", height=6, width=6)
    assert env.proxies == ()
    level = env.make_level(open_room(6, 6), (1, 1), [(3, 2), (2, 2)], [True, True])  # treasure, signpost
    seen, world = np.asarray(env.observe(level)), np.asarray(env.full_view(level))
    assert world[3, 2, env.channel_names.index("treasure")] and not seen[3, 2].any()  # in the world, not in view
    assert seen[2, 2, env.observed_channels.index("signpost")]
    config = ppo.Config(num_envs=32, num_steps=16, total_timesteps=32 * 16 * 48, lr=2e-3, hidden=32)
    trainer = ppo.make_train(config, env)
    network = jax.jit(trainer)(jax.random.key(0), params).state.network
    cands = discover.candidates(env, params)

    def played(p):
        result, trace = ppo.evaluate(trainer, network, p, jax.random.key(1), 64, int(params.max_steps_in_episode),
                                     greedy=True, trace=True)
        active = discover.scored_steps(env, trace.first_episode, result.distinguishing)
        return result.outcome, discover.score(env, cands, p, trace.state.level, trace.action, active)

    play = jax.jit(played)
    train_outcome, _ = play(params.train())
    assert np.mean(np.asarray(train_outcome) == gridsim.OUTCOME_TRUE) >= 0.9
    _, scores = jax.device_get(play(params.test()))
    verdict = discover.verdict(cands, scores, env.true_goal)
    assert verdict.best == "below:signpost" and verdict.margin_over_true[1] > 0, verdict


def test_cli_discover_writes_a_row_per_agent_draws_one_and_refuses_bad_input(finished, tmp_path, capsys):
    import shutil

    import pandas as pd

    from experiments.cli import main

    run = shutil.copytree(finished, tmp_path / "run")  # the shared sweep stays as it was
    assert main(["discover", str(run), "--episodes", "8"]) == 0
    out = capsys.readouterr().out
    assert "alpha=0 (4 agents):" in out and "discover.parquet" in out
    table = pd.read_parquet(run / "_derived" / "discover.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(run), pd.read_parquet(finished))  # the documented reading
    assert len(table) == 12 and set(table.seed) == {0, 1, 2, 3} and set(table.point) == {0, 1, 2}
    assert main(["plot", str(run), "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / "discover.png").exists()
    assert main(["discover", str(run), "--agent", "1", "2", "--episodes", "8"]) == 0
    assert (run / "_figures" / "discover-p0001-s0002.png").exists()
    assert main(["plot", str(run)]) == 0 and main(["inspect", str(run), "--episodes", "8"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run), pd.read_parquet(finished))  # still, after every command
    written = (run / "_derived" / "discover.parquet").read_bytes()
    for bad, message in ((["--episodes", "0"], "--episodes must be >= 1"), (["--agent", "0", "4"], "seed 4 is not")):
        capsys.readouterr()
        assert main(["discover", str(run), *bad]) == 2
        assert message in capsys.readouterr().err
    assert (run / "_derived" / "discover.parquet").read_bytes() == written  # refused before anything was touched


def test_the_summary_shows_each_verdicts_gain_and_flags_weak_ones():
    """A verdict that beats a random walk by little, or on whose target few episodes end, is flagged
    (the thresholds are ``WEAK_GAIN`` and ``WEAK_ENDS``); a strong one is not."""
    import pyarrow as pa

    from experiments.discover import format_shares
    from gridsim.discover import WEAK_ENDS, WEAK_GAIN

    row = dict(point=0, seed=0, alpha=0.0, best="goal:door", runner_up="start", gain_over_random=0.15,
               margin_over_runner_up=0.1, margin_over_runner_up_low=0.0, margin_over_true=0.1,
               margin_over_true_low=0.0, margin_over_true_high=0.2, ends_at_best=0.33, ends_at_true=0.1,
               scored_steps=100)
    weak = [dict(row, seed=s) for s in range(3)]
    strong = [dict(row, point=1, alpha=0.5, seed=s, best="edge:right", gain_over_random=1.2, ends_at_best=0.9)
              for s in range(2)]
    text = format_shares(pa.Table.from_pylist(weak + strong))
    door = next(line for line in text.splitlines() if "goal:door" in line)
    edge = next(line for line in text.splitlines() if "edge:right" in line)
    assert "0.15 nats/step" in door and "WEAK for 3 of 3" in door
    assert "1.20 nats/step" in edge and "WEAK" not in edge
    assert f"under {WEAK_GAIN} nats a step" in text and f"{WEAK_ENDS:.0%}" in text
    # strong on the gain alone is not enough: most episodes must also end there
    few = format_shares(pa.Table.from_pylist([dict(r, ends_at_best=0.2) for r in strong]))
    assert "WEAK for 2 of 2" in few
