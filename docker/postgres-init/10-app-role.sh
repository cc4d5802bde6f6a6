#!/usr/bin/env bash
# The compose `db` service's first start only (the postgres image runs the files of
# /docker-entrypoint-initdb.d when its data directory is empty; see docker-compose.yml).
#
# Creates the application's login role, backoffice_api, with the password APP_DB_PASSWORD, as
# a member of backoffice_app: the group role the migrations grant the app's rights to (they
# create it only if missing, so it is created here first). The app connects as backoffice_api
# and cannot update, delete or truncate the audit tables nor touch their triggers; the owner,
# POSTGRES_USER, runs the migrations (the `migrate` service) and the archive job.
#
# The password is read from the environment by psql itself (\getenv), so it appears neither
# on a command line nor in this file.
set -e

if [ -z "${APP_DB_PASSWORD:-}" ]; then
    echo "10-app-role.sh: APP_DB_PASSWORD is not set (see .env.example)" >&2
    exit 1
fi

psql --no-psqlrc --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv app_password APP_DB_PASSWORD
SELECT 'CREATE ROLE backoffice_app NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backoffice_app') \gexec
CREATE ROLE backoffice_api LOGIN PASSWORD :'app_password' IN ROLE backoffice_app;
SQL
