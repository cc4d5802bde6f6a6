// Atlas project configuration (https://atlasgo.io/atlas-schema/projects).
//
// Run Atlas through `scripts/atlas.sh` (the `task migrate-*` tasks do): it fills in
// DATABASE_URL (the embedded PostgreSQL when unset) and falls back to the arigaio/atlas image
// through docker compose (env "docker") when the Atlas CLI is not installed.
//
// Migrations are applied with Atlas's default revisions schema, `atlas_schema_revisions`:
// `python -m backoffice migrate` (task migrate-builtin) records its work in the same table, so
// the two can take turns on one database.

// The desired schema: the DDL of the SQLModel models, printed by atlas-provider-sqlalchemy.
data "external_schema" "sqlalchemy" {
  program = ["uv", "run", "--frozen", "python", "scripts/load_models.py"]
}

// Developer machine: the Atlas CLI on the host.
//   DATABASE_URL  database that apply/status/down act on (scripts/atlas.sh sets it; the
//                 embedded PostgreSQL's unix-socket URL when the app would use that one)
//   ATLAS_DEV_URL empty scratch database for `migrate diff` / `migrate down`
//                 (default: a throwaway PostgreSQL 18 container, which needs a Docker engine)
env "local" {
  src = data.external_schema.sqlalchemy.url
  dev = getenv("ATLAS_DEV_URL") != "" ? getenv("ATLAS_DEV_URL") : "docker://postgres/18/dev?search_path=public"
  url = getenv("DATABASE_URL")

  migration {
    dir = "file://migrations"
  }

  format {
    migrate {
      diff = "{{ sql . \"  \" }}"
    }
  }
}

// Inside the docker compose network: Atlas runs in the `migrate` service (arigaio/atlas image)
// with the project mounted as its working directory, against the compose `db` service.
// The image has no Python, so the models' DDL is written beforehand by scripts/atlas.sh to
// .data/atlas/schema.sql; `dev` is the throwaway `atlas-dev` service (compose profile "atlas").
// This env does not reference data.external_schema, so Atlas does not run that program here.
env "docker" {
  src = "file://.data/atlas/schema.sql"
  dev = urluserinfo("postgres://atlas-dev:5432/dev?search_path=public&sslmode=disable", "postgres", getenv("POSTGRES_PASSWORD"))
  url = urluserinfo("postgres://db:5432/backoffice?sslmode=disable", "postgres", getenv("POSTGRES_PASSWORD"))

  migration {
    dir = "file://migrations"
  }

  format {
    migrate {
      diff = "{{ sql . \"  \" }}"
    }
  }
}
