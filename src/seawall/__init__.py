"""seawall: the wall between a service's domain and the sea of third-party systems.

The library's subpackages are the public surface:

- `seawall.config`: settings from the environment, `.env` and secret files.
- `seawall.db`: the async database layer and its migrations.
- `seawall.messaging`: CloudEvents envelopes and the transactional outbox.
- `seawall.observability`: structured logs with correlation ids and redaction.
- `seawall.app`: the ready-to-run "cases" service, built from the above.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
