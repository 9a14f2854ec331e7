"""Neural-architecture search for ``cerebros_service``: datasets, search space, numpy trainer.

A private-by-convention subpackage: the ops of :mod:`cerebros_service` import it lazily
(it pulls in numpy), and nothing here is an op. Modules:

* :mod:`.checks` — payload validation helpers raising ``OpError("contract", ...)``;
* :mod:`.datasets` — ``sklearn:NAME``, ``csv:PATH`` and ``npz:PATH`` loaders, the seeded
  (stratified) validation split, standardisation and a per-process cache;
* :mod:`.synthetic` — the ``synthetic:classification|regression`` generators and their options;
* :mod:`.search_space` — the Cerebros-style search space, its normalisation and the seeded
  sampling of one architecture (levels of dense units, predecessor and lateral connections);
* :mod:`.strategies` — the search strategies ``random``, ``tpe`` and ``cmaes`` (Optuna's
  samplers choosing an architecture's shape);
* :mod:`.study` — the run's history sent by the host, rebuilt into an in-memory Optuna study;
* :mod:`.pruning` — the pruners ``median`` and ``asha`` (Optuna's rules) as the trainer's
  per-epoch hook;
* :mod:`.network` — the architecture compiled to a few masked dense stages over one flat
  float32 parameter vector (forward and backward passes);
* :mod:`.trainer` — mini-batch Adam with early stopping on the validation loss;
* :mod:`.artifacts` — atomic ``.npz`` artifacts (weights + architecture JSON) and a loader;
* :mod:`.ops` — the bodies of the ``start_run``, ``run_trial``, ``record_trial`` and
  ``finalize_run`` ops;
* :mod:`.bench_trainer` — ``python -m cerebros_service.nas.bench_trainer``: epoch time versus
  scikit-learn's ``MLPClassifier`` and the 16-trial digits demo.
"""
