"""Print the models' PostgreSQL DDL for Atlas (`data "external_schema"` in atlas.hcl).

Only the DDL goes to stdout: Atlas reads it as the desired schema.
Run it as `uv run python scripts/load_models.py`.
"""

from atlas_provider_sqlalchemy.ddl import print_ddl
from sqlmodel import SQLModel

from backoffice.core.models import import_all_models


def main() -> None:
    import_all_models()
    print_ddl("postgresql", [SQLModel])


if __name__ == "__main__":
    main()
