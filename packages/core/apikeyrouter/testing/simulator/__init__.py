"""Implementation of the simulated provider; import the public names from
:mod:`apikeyrouter.testing`.

Modules: ``provider`` (state and Python API), ``app`` (routing by path and credential style) and
``admin`` (the ``/_sim/`` API), ``flow`` (the request flow every wire format shares), one front
end per format (``openai_api``, ``anthropic_api``, ``gemini_api``) with its bodies and errors
(``openai_wire``/``generation``, ``anthropic_wire``, ``gemini_wire``) and request validation
(``parsing``, ``anthropic_parsing``, ``gemini_parsing``), ``native`` (Anthropic/Gemini replies
and trigger words), ``streaming`` (pacing, cuts, in-band stream errors), ``limiter``/``buckets``
(admission), ``faults``, ``holds``, ``stats``, ``config``, ``server`` (uvicorn runners).
"""
