"""Scale-out on Celery with a Redis broker (the ``scale`` extra).

The same code as the one-process worker, spread as tasks:

* ``scheduler``: enqueues each rule's tick once, however many schedulers run (the
  (rule, tick) pair is unique in the store), plus delivery, alert and purge passes;
* ``tasks``: the Celery app from ``PLUGIN_BACKEND_BROKER_URL``: one rule cycle per
  task (``Worker.run_rule`` under the rule's store lease), annotation delivery and the
  alert queue as tasks of their own;
* ``state``: the rules' detector state in Redis, which any worker resumes;
* ``reload``: SIGHUP reloads the rules in every process of a worker, in place;
* ``app``: the module ``celery -A plugin_backend.scale.app worker`` loads.

An edge layer: the core (``watch``, ``worker``, ``store``) knows nothing of Celery.
"""
