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

First, unless `--skip-startup`, the start-up (startup.py): a warm and a cold `uv run task run`
timed to its first 200 on /health/ready. Then wrk against each scenario after a warm-up (the
whole list `--repeat` times, medians reported); last, one client alone times a 100-task page
(no concurrency: the time a user waits). Every server is stopped at the end, whatever happens.

The report gives issue 13's goals (plan.GOALS: ratios against the same run's baseline) next to
each figure, and a PASS/FAIL line per goal; a scenario with errors is marked ⚠ and fails its
goals. It is printed, and written to bench/RESULTS.md with the machine, the date and the
command (unless `--no-write`).

    uv run python -m scripts.bench [--duration 10] [--connections 64] [--threads 2]
                                   [--products 10000] [--customers 1000] [--tasks 10000]
                                   [--repeat 1] [--skip-startup] [--no-write]

(`task bench -- ...` runs it, installing wrk first when it is missing; `-- --duration 2
--repeat 1 --skip-startup` is a quick run.) The modules: plan.py (options, the scenario list,
the goals), seeding.py (the database), servers.py, client.py (single requests), load.py (wrk
and lua/), startup.py (the start-up times), goals.py (the goals' evaluation), machine.py and
report.py (the Markdown).
"""
