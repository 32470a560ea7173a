"""How one request is carried out: planning steps, choosing keys, recording outcomes.

``ApiKeyRouter`` (router.py) is the public face; these modules hold its moving parts so each
stays small: ``context`` (shared components), ``run`` (per-request bookkeeping), ``planner``
(model groups and fallback chains), ``selector`` (candidates, ranking, reservation) and
``recorder`` (what a success or failure changes).
"""
