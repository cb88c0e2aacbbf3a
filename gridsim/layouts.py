"""Procedural wall layouts and grid utilities, all pure JAX with static shapes.

A layout is a ``bool[H, W]`` array, ``True`` for walls. Every generator keeps
a wall border, so a move can never leave the grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gridsim import rng


def open_room(height: int, width: int) -> np.ndarray:
    """An empty room: walls on the border only (numpy, so that it stays a constant when traced)."""
    walls = np.ones((height, width), dtype=bool)
    walls[1:-1, 1:-1] = False
    return walls


def _maze_edges(cells_h: int, cells_w: int):
    """Static edge list of the cell lattice: endpoints and the wall between them."""
    a, b, wall_r, wall_c = [], [], [], []
    for i in range(cells_h):
        for j in range(cells_w):
            if j + 1 < cells_w:
                a.append(i * cells_w + j), b.append(i * cells_w + j + 1)
                wall_r.append(2 * i + 1), wall_c.append(2 * j + 2)
            if i + 1 < cells_h:
                a.append(i * cells_w + j), b.append((i + 1) * cells_w + j)
                wall_r.append(2 * i + 2), wall_c.append(2 * j + 1)
    return tuple(np.asarray(x, dtype=np.int32) for x in (a, b, wall_r, wall_c))


def maze(key: jax.Array, height: int, width: int) -> jax.Array:
    """A perfect maze (random spanning tree of the cell lattice, Kruskal's algorithm).

    Cells sit at odd coordinates; an even height or width leaves one extra wall
    row or column. Every free cell is connected to every other by exactly one
    path, so any placement of agent and objects is solvable.
    """
    cells_h, cells_w = (height - 1) // 2, (width - 1) // 2
    if cells_h < 1 or cells_w < 1:
        raise ValueError(f"a maze needs height and width >= 3, got {height}x{width}")
    a, b, wall_r, wall_c = _maze_edges(cells_h, cells_w)
    walls = np.ones((height, width), dtype=bool)
    walls[1 : 2 * cells_h : 2, 1 : 2 * cells_w : 2] = False
    if len(a) == 0:
        return jnp.asarray(walls)
    order = jax.random.permutation(key, len(a))
    a, b = jnp.asarray(a)[order], jnp.asarray(b)[order]

    def add_edge(t, carry):
        component, carved = carry
        ca, cb = component[a[t]], component[b[t]]
        joins = ca != cb
        component = jnp.where(joins & (component == cb), ca, component)
        return component, carved.at[order[t]].set(joins)

    _, carved = jax.lax.fori_loop(
        0,
        len(a),
        add_edge,
        (jnp.arange(cells_h * cells_w), jnp.zeros(len(a), dtype=bool)),
    )
    return jnp.asarray(walls).at[wall_r, wall_c].min(~carved)


def _neighbour_min(values: jax.Array, fill) -> jax.Array:
    padded = jnp.pad(values, 1, constant_values=fill)
    return jnp.minimum(
        jnp.minimum(padded[:-2, 1:-1], padded[2:, 1:-1]),
        jnp.minimum(padded[1:-1, :-2], padded[1:-1, 2:]),
    )


def distances(walls: jax.Array, source: jax.Array) -> jax.Array:
    """Shortest-path length (4-connected moves) from ``source`` to every cell.

    Unreachable cells and walls get ``H * W`` (larger than any path).
    """
    unreachable = walls.size
    rows, cols = jnp.indices(walls.shape)
    start = (rows == source[0]) & (cols == source[1]) & ~walls
    dist0 = jnp.where(start, 0, unreachable).astype(jnp.int32)

    def relax(carry):
        dist, _ = carry
        new = jnp.where(walls, unreachable, jnp.minimum(dist, _neighbour_min(dist, unreachable) + 1))
        new = jnp.minimum(new, unreachable)
        return new, jnp.any(new != dist)

    dist, _ = jax.lax.while_loop(lambda c: c[1], relax, (dist0, jnp.array(True)))
    return dist


def reachable(walls: jax.Array, source: jax.Array) -> jax.Array:
    """``bool[H, W]``: free cells that can be walked to from ``source``."""
    return distances(walls, source) < walls.size


def obstacle_room(key: jax.Array, height: int, width: int, density, min_free: int) -> jax.Array:
    """A room with random interior obstacles, every free cell connected.

    Free cells cut off from the largest-scored start cell are walled in. If
    fewer than ``min_free`` cells remain, the obstacles are dropped, so the
    room always fits its objects.
    """
    k_obstacle, k_start = jax.random.split(key)
    room = open_room(height, width)
    walls = room | (jax.random.uniform(k_obstacle, room.shape) < density)
    start = sample_cells(k_start, ~walls, 1)[0]
    connected = reachable(walls, start)
    walls = ~connected
    return jnp.where(jnp.sum(connected) >= min_free, walls, room)


def sample_cells(key: jax.Array, allowed: jax.Array, n: int) -> jax.Array:
    """``n`` distinct cells drawn uniformly from the ``True`` cells of ``allowed``.

    Returns ``int32[n, 2]`` (row, col). The caller guarantees at least ``n``
    allowed cells (checked statically by each environment's constructor).
    """
    return cells_by_draw(rng.uniform(key, allowed.shape), allowed, n)


def cells_by_draw(u: jax.Array, allowed: jax.Array, n: int) -> jax.Array:
    """``sample_cells`` from given uniforms ``u`` (one per cell, shaped like ``allowed``): for
    randomness that comes from a level's stream (``rng.stream``) rather than a key."""
    height, width = allowed.shape
    scores = jnp.where(allowed, u, -1.0).ravel()
    if n == 1:
        flat = jnp.argmax(scores)[None]
    else:
        flat = jax.lax.top_k(scores, n)[1]
    return jnp.stack([flat // width, flat % width], axis=-1).astype(jnp.int32)


@struct.dataclass
class Layout:
    """Walls plus an index of the free cells, so that placing objects is O(1) per object.

    ``cells`` lists flat cell indices, the free ones first in the environment's
    preferred order (so that a region such as "the k x k corner" is a prefix),
    walls after; ``rank`` is its inverse.
    """

    # flat arrays in the smallest integer dtype that fits: gathering a layout from a
    # pool each step is several times cheaper than with 2-D or int32 arrays
    cells: jax.Array  # [H * W] flat cell indices
    rank: jax.Array  # [H * W] position of each cell in ``cells``
    n_free: jax.Array  # int32[]
    free_up_to: jax.Array  # int32[max order + 1]: free cells whose order is at most each value
    shape: tuple[int, int] = struct.field(pytree_node=False)

    @property
    def walls(self) -> jax.Array:
        """``bool[H, W]``, derived from the index."""
        return (self.rank >= self.n_free).reshape(self.shape)

    def count_free(self, max_order) -> jax.Array:
        """How many free cells have an order of at most ``max_order``: the length of the prefix of
        ``cells`` that a region such as "the k x k corner" is (counted once, when indexed)."""
        count = self.free_up_to[jnp.clip(max_order, 0, self.free_up_to.shape[0] - 1)]
        return jnp.where(max_order < 0, 0, count)


def _index_dtype(size: int):
    return jnp.uint8 if size <= 256 else jnp.int16 if size <= 32768 else jnp.int32


def index_layout(walls: jax.Array, order: np.ndarray | None = None) -> Layout:
    """Index the free cells of ``walls``, ordered by ``order`` (static non-negative ``[H, W]``, ties
    row-major).

    Fixed walls (an open room) are indexed once, in numpy, when the program is traced."""
    size = walls.size
    if order is None:
        order = np.zeros(walls.shape, dtype=np.int32)
    if np.min(order) < 0:
        raise ValueError("a cell order ranks cells by non-negative integers")
    sort_key = np.asarray(order, dtype=np.int32).ravel() * size + np.arange(size, dtype=np.int32)
    by_order = np.argsort(sort_key, kind="stable")
    dtype = _index_dtype(size)
    try:
        fixed = np.asarray(walls)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        fixed = None
    xp = jnp if fixed is None else np
    # no sort at run time: walk the cells in the static order, free cells ranked first by a running count
    free = ~(walls if fixed is None else fixed).ravel()[by_order]
    n_free = xp.sum(free, dtype=np.int32)
    position = xp.where(free, xp.cumsum(free) - 1, n_free + xp.cumsum(~free) - 1).astype(np.int32)
    rank = position[np.argsort(by_order)]
    values = np.arange(int(np.max(order)) + 1)
    in_order = np.asarray(order).ravel()[by_order][None, :] <= values[:, None]
    free_up_to = xp.sum(free[None, :] & in_order, axis=1, dtype=np.int32)
    if fixed is None:
        cells = jnp.zeros(size, jnp.int32).at[position].set(jnp.asarray(by_order, jnp.int32), unique_indices=True)
    else:
        cells = np.empty(size, np.int32)
        cells[position] = by_order
    return Layout(cells=jnp.asarray(cells, dtype), rank=jnp.asarray(rank, dtype), n_free=jnp.int32(n_free),
                  free_up_to=jnp.asarray(free_up_to, jnp.int32), shape=walls.shape)


def sample_free(u: jax.Array, layout: Layout, limits, exclude=()) -> jax.Array:
    """Distinct free cells, one per entry of ``limits``: ``int32[n, 2]`` (row, col).

    Entry ``m`` is uniform over the first ``limits[m]`` free cells in the
    layout's order (``None``: all free cells), minus the cells in ``exclude``
    and those already drawn. ``u`` holds one uniform random number per entry
    (e.g. from ``rng.uniform``): one number per object, not one per grid cell,
    keeps auto-reset cheap. The caller guarantees that enough cells are
    available (environments check their capacity statically).
    """
    width = layout.shape[1]
    never = jnp.int32(layout.shape[0] * width + len(limits) + len(exclude))  # a rank no draw can reach
    taken = []
    for cell in exclude:
        rank = layout.rank[cell[0] * width + cell[1]].astype(jnp.int32)
        # a cell excluded twice is skipped once
        taken.append(jnp.where(sum((rank == t).astype(jnp.int32) for t in taken) > 0, never, rank))
    picks = []
    for m, limit in enumerate(limits):
        limit = layout.n_free if limit is None else limit
        available = limit - sum((t < limit).astype(jnp.int32) for t in taken)
        base = rng.to_int(u[m], 0, available)
        pick = base
        for _ in taken:  # the base-th rank not taken: step past each taken rank at or below it
            pick = base + sum((t <= pick).astype(jnp.int32) for t in taken)
        taken.append(pick)
        picks.append(pick)
    flat = layout.cells[jnp.stack(picks)].astype(jnp.int32)
    return jnp.stack([flat // width, flat % width], axis=-1)
