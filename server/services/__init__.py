"""Endpoint modules. Importing this package registers every endpoint."""
from importlib import import_module

MODULES: tuple[str, ...] = (
    "basic", "projects.crud", "projects.tree", "projects.stats", "projects.queries", "tasks.crud", "tasks.params",
    "tasks.status", "tasks.wait", "tasks.batch", "tasks.ex", "tasks.manage", "queues.crud", "queues.claim",
    "queues.metrics", "workers.crud", "workers.stats", "events", "models.crud", "models.batch", "leases",
    "credentials", "users", "organization", "openapi", "reports", "pipelines", "account", "catalog", "export",
    "quotas")


def load_all() -> None:
    for name in MODULES:
        try:
            import_module(f"server.services.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"server.services.{name}":
                raise
