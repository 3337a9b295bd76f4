"""The error hierarchy shared by every Shipyard component.

Each class carries the process exit code the CLI uses when the error escapes to it, so a
shell script or systemd can tell what went wrong without parsing text.

    ShipyardError                 exit 1   anything we raise on purpose
    ├── ConfigError               exit 2   bad or missing configuration / CLI usage
    │   └── SchemaError                    the database's schema is older or newer than this code
    ├── ServerError               exit 3   the task server refused or failed a call
    │   └── AuthError             exit 4   credentials or token rejected
    ├── ServerUnreachable         exit 5   no answer from the task server
    ├── TaskError                 exit 6   a task cannot be built or run (its own fault)
    │   ├── WorkspaceError                 repository, commit, diff or entry point
    │   └── RequirementsError              its Python requirements cannot be installed
    └── InfrastructureError       exit 7   the machine, network or engine failed, not the task

`TaskError` and `InfrastructureError` carry a `reason` fit to show a person, and a
machine-readable `kind` that ends up in the task's status_reason.
"""
from __future__ import annotations


class ShipyardError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(self, message: str = "", *, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def reason(self) -> str:
        return str(self)


class ConfigError(ShipyardError):
    exit_code = 2
    kind = "config"


class SchemaError(ConfigError):
    """The database's schema revision does not match the code: upgrade it, or run the newer release."""

    kind = "schema"


class ServerError(ShipyardError):
    """The server answered with an error envelope."""

    exit_code = 3
    kind = "server"

    def __init__(self, message: str, *, code: int = 500, subcode: int = 0, endpoint: str = ""):
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.endpoint = endpoint


class AuthError(ServerError):
    exit_code = 4
    kind = "auth"


class ServerUnreachable(ShipyardError):
    exit_code = 5
    kind = "unreachable"


class TaskError(ShipyardError):
    """The task itself is at fault: a person must change the task to fix it."""

    exit_code = 6
    kind = "user_error"


class WorkspaceError(TaskError):
    kind = "workspace"


class RequirementsError(TaskError):
    kind = "requirements"


class InfrastructureError(ShipyardError):
    """Not the task's fault; retrying elsewhere or later may succeed."""

    exit_code = 7
    kind = "infrastructure"
