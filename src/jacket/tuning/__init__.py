"""Fitting plans to the machine: timing, the calibration of the cost model's rates
(``jacket calibrate``), and autotuning (``order="fastest"``), with their on-disk caches.

The cost models themselves live in ``jacket/planning/_costs.py``; this package measures what the
calibrated one needs and remembers it per device kind (``JACKET_CACHE_DIR`` overrides where).
"""
from ._autotune import fastest_plan
from ._cache import cache_dir
from ._calibrate import calibrate, load_rates, rates_for

__all__ = ["calibrate", "load_rates", "rates_for", "fastest_plan", "cache_dir"]
