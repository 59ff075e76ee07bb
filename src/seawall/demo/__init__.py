"""``seawall demo``: the cases service against failing third parties, played and checked.

`run_demo` starts the fake payment gateway and the fake Slack webhook from
`seawall.testing` in this process, then ``seawall serve`` on SQLite in a
working folder, and plays a scenario against them: idempotent case creation,
a gateway outage with its circuit breaker, duplicate and early webhooks, one
event fanned out to two consumer groups, and a poison message dead-lettered
and replayed. Each step is printed and checked, and a summary table ends it.

`seawall.demo.consumers` is the demo's consumer module, loaded only by the
service the demo starts (``SEAWALL_CONSUMER_MODULES``). Nothing else imports
it: its ``@consumer`` would join every later worker of the importing process.
"""

from seawall.demo._run import DEFAULT_FOLDER, DEFAULT_PORT, run_demo

__all__ = ["DEFAULT_FOLDER", "DEFAULT_PORT", "run_demo"]
