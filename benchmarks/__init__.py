"""Benchmarks and a load harness for flask-prancer-session.

Four entry points, each with ``--help``:

``python -m benchmarks``
    Requests per second of four views (counter, read-only, untouched,
    anonymous) for bare Flask, Flask's cookie session, this extension on every
    reachable store, the floor of each backend (the least a server-side
    session can do there, :mod:`.floors`) and Flask-Session, in one process
    with Flask's test client, in interleaved rounds. Results are ratios to
    bare Flask, to Flask's cookie session, to each store's floor and to
    Flask-Session on the same backend: medians of the rounds with their
    interquartile ranges.
``python -m benchmarks.scale``
    The cost of a request with 1e3, 1e4, 1e5... sessions already stored, and
    the time and peak memory of purging the expired tenth of them.
``python -m benchmarks.roundtrips``
    One round trip to each server, through a bare socket and the drivers.
``python -m benchmarks.load``
    The example app under a real gunicorn with concurrent clients: throughput,
    latency, and checks that no request failed, no update was lost and no
    session survived its logout; then this extension's Redis and PostgreSQL
    stores, their floors and Flask-Session's Redis backend under the same
    gunicorn and load (throughput, p50, p99, ratios to the floors).

Only the library's public behaviour is used (``PrancerSession(app)``, the
``PRANCER_SESSION`` config, :data:`flask.session` as a dict), except the
pre-fill of the scale benchmark, which writes through the store driver.
"""
