#!/bin/sh
# The compose `pgbouncer` service's entry point: writes the auth file for the app's login role
# (backoffice_api) from APP_DB_PASSWORD, readable by this process only, then runs PgBouncer
# with docker/pgbouncer/pgbouncer.ini. The password never lands in the repository.
set -eu
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD is not set (see .env.example)}"
umask 077
mkdir -p /tmp/pgbouncer
printf '"backoffice_api" "%s"\n' "$APP_DB_PASSWORD" >/tmp/pgbouncer/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
