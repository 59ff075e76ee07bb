"""Test helpers shipped with seawall, for its own tests and for users' tests.

- `FakeClock`: a `seawall.resilience.Clock` whose time moves only when told to,
  so retries, breakers and rate limits are tested without real waiting.
"""

from seawall.testing._clock import FakeClock

__all__ = ["FakeClock"]
