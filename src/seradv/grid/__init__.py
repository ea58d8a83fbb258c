"""The attack grid: plan the cells (:mod:`~seradv.grid.plan`), run them resumably
(:mod:`~seradv.grid.run`, through :mod:`~seradv.grid.executors`), read and summarise their
results with the worst case (:mod:`~seradv.grid.results`) and check them (:mod:`~seradv.grid.checks`).

Import from the submodules, e.g. ``from seradv.grid.run import run_grid``.
"""
