"""`shipyard backup` and `shipyard restore`: thin wrappers over server.backup (SQLite data dirs)."""
from __future__ import annotations

from pathlib import Path

import click

from server.backup import backup, restore
from server.config import load_server_config

_CONFIG = click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                       help="Server config file (HOCON), as given to `shipyard server`.")
_DATA_DIR = click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
                         help="The server's data dir (default ~/.shipyard or $SHIPYARD_DATA_DIR).")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@click.command("backup")
@click.argument("target", type=click.Path(path_type=Path, dir_okay=False))
@_CONFIG
@_DATA_DIR
@click.option("--db", help="Database URL, as given to the server (PostgreSQL is refused: use pg_dump).")
def backup_cmd(target: Path, config_file: Path | None, data_dir: Path | None, db: str | None) -> None:
    """Archive the database and the files store into TARGET (.tar, or .tar.gz), while the server runs."""
    config = load_server_config(config_file, overrides={"data_dir": data_dir, "db": db})
    manifest = backup(config.data_dir, config.db_url, target)
    click.echo(f"{target}: database {_mib(manifest.db_bytes)} (schema {manifest.schema_revision}), "
               f"{manifest.files} files {_mib(manifest.files_bytes)}")


@click.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_CONFIG
@_DATA_DIR
@click.option("--force", is_flag=True, help="Restore over a data dir that holds a database or files (its server "
                                            "stopped); they are moved into before-restore-<time>/ there.")
def restore_cmd(archive: Path, config_file: Path | None, data_dir: Path | None, force: bool) -> None:
    """Unpack a `shipyard backup` archive into the data dir; start the server on it afterwards."""
    config = load_server_config(config_file, overrides={"data_dir": data_dir})
    manifest = restore(archive, config.data_dir, force=force)
    click.echo(f"restored {archive} (taken {manifest.created}, schema {manifest.schema_revision}) into "
               f"{config.data_dir}: {manifest.files} files")
