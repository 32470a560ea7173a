"""Implementation of the simulated provider; import the public names from
:mod:`apikeyrouter.testing`.

Modules: ``provider`` (state and Python API), ``app``/``admin`` (raw ASGI routing),
``limiter``/``buckets`` (admission), ``faults``, ``holds``, ``generation``/``openai_wire``
(what goes on the wire), ``parsing``, ``stats``, ``config``, ``server`` (uvicorn runners).
"""
