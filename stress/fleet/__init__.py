"""Fleets: many lab machines, one shared history, scheduled by Buildbot (docs/fleet.md).

- :mod:`stress.fleet.schema`: the fleet file (machines, scenario matrix, schedule, soak, history, bundles);
- :mod:`stress.fleet.master`: the Buildbot master configuration made from it (``configure``), imported by
  the master's ``master.cfg``; :mod:`stress.fleet.steps` its build steps (Buildbot is imported only there);
- :mod:`stress.fleet.records`: what the master writes into the shared history (the runs a build uploaded,
  a host that stopped responding) and what a worker packs for upload;
- :mod:`stress.fleet.view`: the matrix of machines x scenarios from the history (HTML and JSON).
"""
