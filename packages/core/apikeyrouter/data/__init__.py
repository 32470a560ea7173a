"""Data files shipped with the package (read with ``importlib.resources``, so they work from a
wheel, a zip or a source checkout alike). ``pricing.yaml`` is the default pricing table."""
