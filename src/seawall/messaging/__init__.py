"""Events and the transactional outbox.

An `Event` is a CloudEvents 1.0 envelope with the ``correlationid`` and
``causationid`` extensions. `Outbox.add` writes it inside the caller's database
transaction, so the event exists exactly when the change that caused it does;
a relay publishes it afterwards (never "save, then publish").
"""

from seawall.messaging._event import Event
from seawall.messaging._outbox import Outbox

__all__ = ["Event", "Outbox"]
