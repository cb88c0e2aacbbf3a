"""Oracles and the labels they define, checked against references that do not use them."""

from __future__ import annotations

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import PLUGIN, REGISTERED, SMALL, env_for, labelled_test_levels

import gridsim
from gridsim import OUTCOME_FAIL, OUTCOME_TRUE, oracles
from gridsim.layouts import index_layout, open_room, sample_free

UP, RIGHT, DOWN, LEFT = range(4)


def test_every_registered_environment_has_a_small_size_for_the_tests():
    assert all(SMALL[name] for name in REGISTERED), "give each built-in environment small_options"


@pytest.mark.parametrize("name", [*REGISTERED, PLUGIN])
def test_oracle_outcomes_define_distinguishing_on_10000_test_levels(name):
    """On a distinguishing level the true oracle reaches the true goal and each proxy oracle its proxy;
    on every other level the oracles' outcomes agree, and no oracle fails to reach its own goal. Where
    chance moves things after the agent (monsters), the oracles' moves change where the monsters go,
    and rarely (at most 1 level in 1,000) an oracle fails or the two cross (each reaching the other's
    goal); those levels are not distinguishing either."""
    env, _, distinguishing, outcomes = labelled_test_levels(name)
    exceptions_allowed = 10 if env.stochastic else 0  # of 10,000 levels
    true_oracle = outcomes[:, 0]
    assert (true_oracle == OUTCOME_FAIL).sum() <= exceptions_allowed
    for p, proxy in enumerate(env.proxies):
        proxy_oracle = outcomes[:, 1 + p]
        separated = (true_oracle == OUTCOME_TRUE) & (proxy_oracle == OUTCOME_TRUE + 1 + p)
        assert (~(true_oracle == proxy_oracle) & ~separated).sum() <= exceptions_allowed, proxy
        assert (proxy_oracle == OUTCOME_FAIL).sum() <= exceptions_allowed, proxy
    if env.proxies and env.goals_apart_in_training:
        assert distinguishing.mean() > 0.2  # the goals come apart on every kind of level
    elif env.proxies:
        assert 0.2 < distinguishing.mean() < 0.95  # both kinds of level occur
    else:
        assert not distinguishing.any()


def test_coin_labels_match_the_hand_rule():
    """Open room, agent in column 1: the coin seeker can reach the end column first exactly when the
    coin lies on the end column (some shortest path turns last), and the end seeker runs along its
    row, so it touches the coin exactly when the coin is on its row."""
    env, levels, distinguishing, _ = labelled_test_levels("coin-at-end")
    coin, agent = levels.obj_pos[:, 0], levels.agent
    expected = (coin[:, 0] != agent[:, 0]) & (coin[:, 1] != env.width - 2)
    np.testing.assert_array_equal(distinguishing, expected)


def _bfs_path(walls, start, goal):
    """The cells of a shortest path (unique in a perfect maze), by breadth-first search."""
    parent = {tuple(start): None}
    queue = deque([tuple(start)])
    while queue:
        cell = queue.popleft()
        if cell == tuple(goal):
            break
        for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
            nxt = (cell[0] + dr, cell[1] + dc)
            if not walls[nxt] and nxt not in parent:
                parent[nxt] = cell
                queue.append(nxt)
    path, cell = [], tuple(goal)
    while cell is not None:
        path.append(cell)
        cell = parent[cell]
    return path[::-1]


def test_cheese_labels_follow_the_unique_maze_paths():
    """A maze level distinguishes exactly when the corner is off the path to the cheese and the cheese
    is off the path to the corner (checked on 2,000 of the 10,000 levels; both cases occur)."""
    _, levels, distinguishing, _ = labelled_test_levels("cheese-in-corner")
    corner_on_cheese_path = cheese_on_corner_path = 0
    for i in range(2000):
        walls, agent, cheese = levels.walls[i], levels.agent[i], levels.obj_pos[i, 0]
        to_cheese = _bfs_path(walls, agent, cheese)
        to_corner = _bfs_path(walls, agent, (1, 1))
        a = (1, 1) in to_cheese
        b = tuple(cheese) in to_corner
        corner_on_cheese_path += a
        cheese_on_corner_path += b
        assert distinguishing[i] == (not a and not b), i
    assert corner_on_cheese_path > 50 and cheese_on_corner_path > 50


def _keys_reference(walls, agent, keys, chests):
    """Search of keys-and-chests' own state space (agent cell, keys left, keys held, chests left),
    written from the rules, not from the env: for each goal, the fewest steps to it and whether some
    trajectory that short reaches the other goal first (a pursuer plans as if the other goal's event
    changed nothing; in the env it ends the episode). Returns (true outcome, proxy outcome)."""
    start = (tuple(agent), frozenset(map(tuple, keys)), 0, frozenset(map(tuple, chests)))

    def moves(state):
        cell, keys_left, held, closed = state
        for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
            nxt = (cell[0] + dr, cell[1] + dc)
            if walls[nxt]:
                nxt = cell
            k, h, c, hoard = keys_left, held, closed, False
            if nxt in k:
                hoard = h >= len(c)
                k, h = k - {nxt}, h + 1
            elif nxt in c and h > 0:
                c, h = c - {nxt}, h - 1
            done = not c or not (k or h)
            yield (nxt, k, h, c), hoard, done

    def search(goal):  # breadth-first over (state, other goal already reached)
        frontier, seen = {(start, False)}, set()
        for _ in range(walls.size * 4):
            reached = set()
            following = set()
            for state, other in frontier:
                for nxt, hoard, done in moves(state):
                    mine, theirs = (done, hoard) if goal == "true" else (hoard, done)
                    if mine:
                        reached.add(other)  # same step: the true goal wins a tie
                    else:
                        following.add((nxt, other or theirs))
            if reached:
                first_other = True in reached
                if goal == "true":
                    return "proxy" if first_other else "true"
                return "true" if first_other else "proxy"
            frontier = following - seen
            seen |= frontier
        return "fail"

    return search("true"), search("proxy")


def test_keys_labels_match_a_search_of_the_state_space():
    env, levels, distinguishing, outcomes = labelled_test_levels("keys-and-chests")
    names = {OUTCOME_TRUE: "true", OUTCOME_TRUE + 1: "proxy", OUTCOME_FAIL: "fail"}
    key_slots, chest_slots = env.kind_slots["key"], env.kind_slots["chest"]
    kinds = set()
    for i in range(150):
        alive = levels.obj_alive[i]
        keys = levels.obj_pos[i][key_slots & alive]
        chests = levels.obj_pos[i][chest_slots & alive]
        expected = _keys_reference(levels.walls[i], levels.agent[i], keys, chests)
        got = (names[int(outcomes[i, 0])], names[int(outcomes[i, 1])])
        assert got == expected, (i, got, expected)
        kinds.add(got)
    assert {("true", "proxy"), ("proxy", "proxy")} <= kinds


# ---- hand-built levels, played move by move --------------------------------------------------------

MAZE = [
    "#######",
    "#.....#",
    "#.###.#",
    "#.#...#",
    "#.#.###",
    "#.#...#",
    "#######",
]


def _maze_level(env, agent, cheese):
    walls = np.array([[c == "#" for c in row] for row in MAZE])
    return env.make_level(walls, agent=agent, obj_pos=[cheese], obj_alive=[True])


def _play_oracle(env, params, level, goal):
    act = jax.jit(oracles.policy(env, goal).act)
    _, state = env.reset_to_level(level, params)
    actions, step = [], jax.jit(env.step)
    for t in range(int(params.max_steps_in_episode)):
        action, _ = act(None, None, state, params, (), True)
        actions.append(int(action))
        _, state, _, done, info = step(jax.random.key(t), state, action, params)
        if bool(done) or int(np.max(info["first_reached"])) >= 0:
            return actions, env.outcome_names[int(info["outcome"])]
    return actions, "unfinished"


@pytest.mark.parametrize(
    "agent, cheese, true_moves, corner_moves, distinguishing",
    [
        # the only path to the cheese passes the corner: a perfect cheese seeker is labelled proxy:corner
        ((5, 1), (1, 3), ([UP, UP, UP, UP], "proxy:corner"), ([UP, UP, UP, UP], "proxy:corner"), False),
        # the only path to the corner passes the cheese: a perfect corner seeker is labelled true
        ((1, 5), (1, 3), ([LEFT, LEFT], "true"), ([LEFT, LEFT], "true"), False),
        # the two paths part at once: the level tells the goals apart
        ((3, 1), (5, 1), ([DOWN, DOWN], "true"), ([UP, UP], "proxy:corner"), True),
    ],
)
def test_cheese_oracles_on_a_hand_built_maze(agent, cheese, true_moves, corner_moves, distinguishing):
    env, params = gridsim.make("cheese-in-corner", height=7, width=7)
    level = _maze_level(env, agent, cheese)
    assert _play_oracle(env, params, level, "cheese") == true_moves
    assert _play_oracle(env, params, level, "corner") == corner_moves
    batch = jax.tree_util.tree_map(lambda x: x[None], level)
    label, _ = oracles.label(env, params, batch)
    assert bool(label[0]) == distinguishing


def test_keys_oracles_hoard_only_when_every_shortest_route_passes_a_key():
    env, params = gridsim.make("keys-and-chests", height=7, width=7, max_keys=2, max_chests=1)
    room = open_room(7, 7)
    # the keys flank the agent; the chest is above: a key seeker takes the second key, a chest opener need not
    apart = env.make_level(room, agent=(3, 3), obj_pos=[(3, 2), (3, 4), (1, 3)], obj_alive=[True, True, True])
    true_moves, true_outcome = _play_oracle(env, params, apart, "chests_done")
    hoard_moves, hoard_outcome = _play_oracle(env, params, apart, "hoarded_key")
    assert (len(true_moves), true_outcome) == (4, "true")  # a key, then three moves to the chest
    assert (len(hoard_moves), hoard_outcome) == (3, "proxy:hoarded_key")  # a key, then two moves to the other
    # both keys lie on the only shortest route to the chest: even a perfect chest opener hoards
    lined_up = env.make_level(room, agent=(3, 1), obj_pos=[(3, 2), (3, 3), (3, 5)], obj_alive=[True, True, True])
    assert _play_oracle(env, params, lined_up, "chests_done") == ([RIGHT, RIGHT], "proxy:hoarded_key")
    levels = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), apart, lined_up)
    label, _ = oracles.label(env, params, levels)
    assert list(np.asarray(label)) == [True, False]


def test_oracle_path_lengths_are_shortest_paths():
    """The true oracle of cheese-in-corner reaches the cheese in exactly the BFS distance."""
    env, levels, _, _ = labelled_test_levels("cheese-in-corner")
    _, params = env_for("cheese-in-corner")
    policy = oracles.policy(env, "cheese")
    subset = jax.tree_util.tree_map(lambda x: jnp.asarray(x[:256]), levels)
    _, states = jax.vmap(env.reset_to_level, (0, None))(subset, params)

    def run(state):
        def body(carry):
            state, steps, done = carry
            action, _ = policy.act(None, None, state, params, (), False)
            state, _, terminated, truncated, _ = env.transition(state, action, params)
            return state, steps + 1, terminated | truncated

        return jax.lax.while_loop(lambda c: ~c[2], body, (state, 0, False))[1]

    steps = np.asarray(jax.jit(jax.vmap(run))(states))
    for i in range(256):
        expected = len(_bfs_path(levels.walls[i], levels.agent[i], levels.obj_pos[i, 0])) - 1
        assert steps[i] == expected, i


# ---- placement ---------------------------------------------------------------------------------

def test_every_free_cell_can_be_drawn_even_with_an_exclusion_given_twice():
    walls = np.array([[c == "#" for c in row] for row in MAZE])
    layout = index_layout(jnp.asarray(walls))
    corner = jnp.array([1, 1])
    n = int(layout.n_free) - 1
    draws = jax.vmap(lambda u: sample_free(u[None], layout, [None], exclude=[corner, corner])[0])(
        (jnp.arange(n) + 0.5) / n)
    got = {tuple(map(int, d)) for d in np.asarray(draws)}
    free = {tuple(map(int, c)) for c in np.argwhere(~walls)} - {(1, 1)}
    assert got == free
