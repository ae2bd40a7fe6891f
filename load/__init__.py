"""What drives a running ``bentoml serve``: locust traffic, faults, and the harness both use.

``locustfile`` is the load itself and ``smoke`` a headless run of it;
``reliability`` injects faults (fuzzing, duplicate events, Redis outages,
a killed worker); ``harness`` starts the servers and Redis they run against.
The serving benchmarks and the integration tests import it as installed.
"""
