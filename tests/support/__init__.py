"""What tests share beside fixtures, importable by name (pytest fixtures stay in conftest.py):

- `http`: a client on an app, bearer headers, the problem+json assertion, walking pages;
- `database`: scratch databases on the test server, logins, reading a row back as stored;
- `users`: stored users and their sessions, signing in through the API;
- `factories`: request bodies (and their collection paths) for the business resources.

A package rather than one `helpers.py`: each of these is imported by a different set of
tests (the live-server and own-PostgreSQL modules need no HTTP client, the slices no
database plumbing), and a newcomer finds a helper by the name of what it is about.
"""
