"""Benchmarks and a load harness for flask-prancer-session.

Three entry points, each with ``--help``:

``python -m benchmarks``
    Requests per second of four views (counter, read-only, untouched,
    anonymous) for bare Flask, Flask's cookie session, this extension on every
    reachable store, and Flask-Session, in one process with Flask's test
    client. Results are ratios to bare Flask and to Flask's cookie session.
``python -m benchmarks.scale``
    The cost of a request with 1e3, 1e4, 1e5... sessions already stored, and
    the time and peak memory of purging the expired tenth of them.
``python -m benchmarks.load``
    The example app under a real gunicorn with concurrent clients: throughput,
    latency, and checks that no request failed, no update was lost and no
    session survived its logout.

Only the library's public behaviour is used (``PrancerSession(app)``, the
``PRANCER_SESSION`` config, :data:`flask.session` as a dict), except the
pre-fill of the scale benchmark, which writes through the store driver.
"""
