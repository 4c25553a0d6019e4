"""``autofix demo``: the whole loop on a real news-delivery stack, and its ground truth.

One module per concept, each usable on its own (``benchmarks/faults.py`` runs the same
stack and schedule with another remediator):

- ``app``: the tiny news app (one worker; PostgreSQL, Redis, access logs, ``/health``);
- ``servers``: PostgreSQL, Redis (the system's or PyPI's) and supervisord (PyPI);
- ``stack``: ``Stack`` — the servers, two workers, the log disk and the users, started
  in one temporary directory and removed after;
- ``traffic``: the users: a steady load and the prober (what users saw);
- ``faults``: ``schedule(seed)`` — faults and benign events, and their injectors;
- ``truth``: ``Recorder`` plays a schedule and records what really happened;
  ``FixRecord`` / ``fixes_from_store``: what a remediator did;
- ``kpis``: ``ground_truth`` — the five KPIs of a run from the above;
- ``pipeline``: ``render_pipeline`` — the shipped pipelines file on the demo's stack and clock;
- ``view``: the live terminal view and the end tables;
- ``run``: ``run_demo`` — all of it, as ``autofix demo`` runs it.

Example (another remediator on the same stack and schedule)::

    with Stack(StackOptions(seed=1)) as stack:
        plan = schedule(1)
        recorder = Recorder(stack, plan)
        ...                                 # start the remediator, then:
        recorder.run(threading.Event())
        truth = ground_truth(recorder.records, its_fixes, read_probes(stack.probes),
                             plan.manual_response)
"""
