"""Endpoint modules. Importing this package registers every endpoint."""
from importlib import import_module

MODULES: tuple[str, ...] = ("basic", "projects", "tasks.crud", "tasks.params", "tasks.status", "tasks.batch", "queues", "workers",
           "events", "models", "leases", "credentials", "openapi")
MODULES += ("tasks.ex", "tasks.manage")  # the tasks family's queries and bulk edits (issue 19)


def load_all() -> None:
    for name in MODULES:
        try:
            import_module(f"server.services.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"server.services.{name}":
                raise
