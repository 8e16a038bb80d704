#!/bin/sh
# Run once by the postgres image on a new volume (docker-entrypoint-initdb.d): one login role per process,
# each owning only its own schema. A service logs in as its role and cannot become another one (no
# membership, no CREATEROLE, no superuser), so `RESET ROLE` leaves it where it started.
set -eu
for pair in "coupon:${COUPON_DB_PASSWORD}" "points:${POINTS_DB_PASSWORD}" "recommend:${RECOMMEND_DB_PASSWORD}" \
            "survey:${SURVEY_DB_PASSWORD}" "gateway:${GATEWAY_DB_PASSWORD}"; do
  name="${pair%%:*}"
  password="${pair#*:}"
  psql -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
       -v role="reciprocity_${name}" -v password="$password" -v schema="$name" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION PASSWORD :'password';
CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"role";
REVOKE ALL ON SCHEMA public FROM :"role";
ALTER ROLE :"role" SET search_path TO :"schema";
SQL
done
