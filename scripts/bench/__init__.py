"""Benchmark the products API against itself without auth and a bare asyncpg + Starlette
baseline, and the task list with its joined summaries, with wrk.

One run: an embedded PostgreSQL of its own (`.data/bench-postgres`, database
`backoffice_bench`) seeded with `--products` products, `--customers` customers and `--tasks`
tasks (each with an assignee, a customer and a product), the default roles and a superuser with
a fresh password; four servers, all in production mode with the same workers:

- the API (`python -m backoffice serve`): the bench logs in once and sends the access token;
- the same API with authentication switched off (`auth_off.py`, bench-only);
- the API with both audits switched off (AUDIT_ACCESS_ENABLED, AUDIT_DATA_ENABLED = false);
- the baseline (`baseline.py`).

Then wrk against each scenario after a warm-up (the whole list `--repeat` times, medians
reported), and a Markdown table of the results; last, one client alone times a 100-task page
(no concurrency: the time a user waits). Every server is stopped at the end, whatever happens.

    uv run python -m scripts.bench [--duration 10] [--connections 64] [--threads 2]
                                   [--products 10000] [--customers 1000] [--tasks 10000]
                                   [--repeat 1]

(`task bench -- ...` runs it, installing wrk first when it is missing.) The modules:
plan.py (options, the scenario list), seeding.py (the database), servers.py, client.py (single
requests), load.py (wrk and lua/), report.py (the Markdown).
"""
