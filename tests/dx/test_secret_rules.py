"""Our gitleaks rules (.gitleaks.toml) do what they say: planted secrets match their rule, benign
text (references, placeholders, URLs without a password) does not, the allowlist covers
.env.example and docs/ only, and no tracked file holds a match, so a real leak fails CI even
where gitleaks itself cannot be installed. With a `gitleaks` binary on PATH, gitleaks itself is
run on planted files too.

The rules are compiled with Python's `re`: the config keeps to the syntax RE2 (Go) and Python
share, and `CustomRule.findings` applies the rule allowlists the way gitleaks does.

Planted secrets are assembled at run time from the `<...>` markers below, so that this file
holds none: the repository scan, gitleaks and detect-private-key would otherwise flag it.
"""

import json
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backoffice.auth.api_keys import new_api_key

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / ".gitleaks.toml"
CONFIG: dict[str, Any] = tomllib.loads(CONFIG_PATH.read_text())

DATABASE_URL_RULE = "backoffice-database-url-password"
SECRET_KEY_RULE = "backoffice-secret-key-setting"
PRIVATE_KEY_RULE = "backoffice-private-key"
API_KEY_RULE = "backoffice-api-key"
CUSTOM_RULE_IDS = {DATABASE_URL_RULE, SECRET_KEY_RULE, PRIVATE_KEY_RULE, API_KEY_RULE}

MARKERS = {
    "<pg>": "postgres",
    "<SK>": "SECRET_KEY",
    "<sk>": "secret_key",
    "<BEGIN>": "-----BEGIN",
    "<END>": "-----END",
    "<bo>": "bo_sk_",
}
# The shape of a key's secret, 43 base62 characters, spelt out without being one.
_SECRET_43 = "Zk4T" * 10 + "q7W"


def planted(template: str) -> str:
    """`template` with its markers replaced by the words that make it a secret."""
    for marker, word in MARKERS.items():
        template = template.replace(marker, word)
    return template


@dataclass(frozen=True)
class CustomRule:
    id: str
    regex: re.Pattern[str]
    secret_group: int
    allow_regexes: tuple[re.Pattern[str], ...]
    stopwords: tuple[str, ...]
    keywords: tuple[str, ...]

    @classmethod
    def from_config(cls, rule: dict[str, Any]) -> "CustomRule":
        allowlists: list[dict[str, Any]] = rule.get("allowlists", [])
        for allowlist in allowlists:
            # Only the regex/stopword kinds are emulated in `findings`.
            assert set(allowlist) <= {"description", "regexes", "stopwords"}, allowlist
        return cls(
            id=rule["id"],
            regex=re.compile(rule["regex"]),
            secret_group=rule.get("secretGroup", 0),
            allow_regexes=tuple(
                re.compile(regex)
                for allowlist in allowlists
                for regex in allowlist.get("regexes", [])
            ),
            stopwords=tuple(
                word.lower() for allowlist in allowlists for word in allowlist.get("stopwords", [])
            ),
            keywords=tuple(rule.get("keywords", [])),
        )

    def findings(self, text: str) -> list[str]:
        """The secrets gitleaks reports for this rule in `text` (rule allowlists applied; the
        global allowlist is about paths: see `path_allowed`)."""
        if self.keywords and not any(keyword in text.lower() for keyword in self.keywords):
            return []  # gitleaks only runs a rule on text holding one of its keywords
        secrets = []
        for match in self.regex.finditer(text):
            if self.secret_group:
                secret = match.group(self.secret_group)
            else:  # gitleaks: the first non-empty group, else the whole match
                secret = next((group for group in match.groups() if group), match.group(0))
            if any(regex.search(secret) for regex in self.allow_regexes):
                continue
            if any(word in secret.lower() for word in self.stopwords):
                continue
            secrets.append(secret)
        return secrets


RULES = {
    rule["id"]: CustomRule.from_config(rule)
    for rule in CONFIG.get("rules", [])
    if rule["id"].startswith("backoffice-")
}
GLOBAL_ALLOWED_PATHS = [re.compile(path) for path in CONFIG["allowlist"]["paths"]]


def path_allowed(path: str) -> bool:
    """Whether the global allowlist skips the file at `path` (relative to the repo root)."""
    return any(regex.search(path) for regex in GLOBAL_ALLOWED_PATHS)


def all_findings(text: str) -> dict[str, list[str]]:
    return {rule_id: found for rule_id, rule in RULES.items() if (found := rule.findings(text))}


def test_the_config_extends_gitleaks_defaults_with_our_rules() -> None:
    assert CONFIG["extend"] == {"useDefault": True}
    assert set(RULES) == CUSTOM_RULE_IDS
    for rule in RULES.values():
        # gitleaks compares keywords with the lowercased text
        assert rule.keywords, rule.id
        assert all(keyword == keyword.lower() for keyword in rule.keywords), rule.id


@pytest.mark.parametrize(
    "regex",
    [
        *(rule["regex"] for rule in CONFIG["rules"]),
        *(
            regex
            for rule in CONFIG["rules"]
            for allowlist in rule.get("allowlists", [])
            for regex in allowlist.get("regexes", [])
        ),
        *CONFIG["allowlist"]["paths"],
    ],
)
def test_regexes_keep_to_what_go_re2_supports(regex: str) -> None:
    """No lookaround, atomic group or backreference: Python accepts them, gitleaks (RE2) fails."""
    assert not re.search(r"\(\?<?[=!]|\(\?>|\(\?P=|\\[1-9]|\\k<", regex), regex
    re.compile(regex)


PLANTED_SECRETS = [
    # A password in a PostgreSQL URL, whatever the driver suffix, quoted or not.
    (
        DATABASE_URL_RULE,
        "DATABASE_URL=<pg>ql://backoffice:Xk9vQ2mLr7Tz@db.internal:5432/app",
        "Xk9vQ2mLr7Tz",
    ),
    (DATABASE_URL_RULE, 'url = "<pg>ql+asyncpg://app:s3cr3t-P%40ss@10.0.0.5/app"', "s3cr3t-P%40ss"),
    (
        DATABASE_URL_RULE,
        "  DATABASE_URL: <pg>://admin:hunter2hunter2@localhost/db",
        "hunter2hunter2",
    ),
    (DATABASE_URL_RULE, "dsn='<pg>ql://ro:Wp;7:x$Q@replica:6432/app?ssl=require'", "Wp;7:x$Q"),
    # SECRET_KEY with a literal value: .env / shell, YAML, Python, JSON.
    (SECRET_KEY_RULE, "<SK>=N3v3rCommitTh1sK3y-9f8e7d6c5b4a", "N3v3rCommitTh1sK3y-9f8e7d6c5b4a"),
    (SECRET_KEY_RULE, "export <SK>=qT8wZ2pL5nR9vX3c", "qT8wZ2pL5nR9vX3c"),
    (SECRET_KEY_RULE, "  <SK>: qT8wZ2pL5nR9vX3cK7mB", "qT8wZ2pL5nR9vX3cK7mB"),
    (SECRET_KEY_RULE, '<sk> = "u5Jr0Lq-2Wd9/Xe4+Nc7Hs1Kb6"', "u5Jr0Lq-2Wd9/Xe4+Nc7Hs1Kb6"),
    (SECRET_KEY_RULE, '{"<SK>": "Ab3De6Gh9Jk2Mn5Pq8St"}', "Ab3De6Gh9Jk2Mn5Pq8St"),
    # A private key, or even its header alone.
    (
        PRIVATE_KEY_RULE,
        "<BEGIN> RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1L7VLPH\n<END> RSA PRIVATE KEY-----",
        "<BEGIN> RSA PRIVATE KEY-----",
    ),
    (PRIVATE_KEY_RULE, "<BEGIN> OPENSSH PRIVATE KEY-----", "<BEGIN> OPENSSH PRIVATE KEY-----"),
    (PRIVATE_KEY_RULE, "key = '''<BEGIN> PRIVATE KEY-----", "<BEGIN> PRIVATE KEY-----"),
    (PRIVATE_KEY_RULE, "<BEGIN> EC PRIVATE KEY-----", "<BEGIN> EC PRIVATE KEY-----"),
    (PRIVATE_KEY_RULE, "<BEGIN> PGP PRIVATE KEY BLOCK-----", "<BEGIN> PGP PRIVATE KEY BLOCK-----"),
    # An API key in an env file, an HTTP header, JSON, a URL's query string.
    (
        API_KEY_RULE,
        f"BACKOFFICE_API_KEY=<bo>3f9a0c1d2e4b5a69_{_SECRET_43}",
        f"<bo>3f9a0c1d2e4b5a69_{_SECRET_43}",
    ),
    (
        API_KEY_RULE,
        f"curl -H 'Authorization: Bearer <bo>0123456789abcdef_{_SECRET_43}' https://api",
        f"<bo>0123456789abcdef_{_SECRET_43}",
    ),
    (
        API_KEY_RULE,
        f'{{"api_key": "<bo>ffffffffffffffff_{_SECRET_43}"}}',
        f"<bo>ffffffffffffffff_{_SECRET_43}",
    ),
    (
        API_KEY_RULE,
        f"?key=<bo>a1b2c3d4e5f60718_{_SECRET_43}&x=1",
        f"<bo>a1b2c3d4e5f60718_{_SECRET_43}",
    ),
]


@pytest.mark.parametrize(("rule_id", "template", "secret"), PLANTED_SECRETS)
def test_a_planted_secret_matches_its_rule(rule_id: str, template: str, secret: str) -> None:
    assert all_findings(planted(template)) == {rule_id: [planted(secret)]}


@pytest.mark.parametrize(
    "template",
    [
        # PostgreSQL URLs without a secret in them
        "DATABASE_URL=<pg>ql://backoffice@db:5432/backoffice",
        "<pg>://<pg>:@localhost:5432/backoffice",
        "<pg>://atlas-dev:5432/dev?search_path=public",
        "<pg>ql://<pg>:${POSTGRES_PASSWORD:?set it in .env}@db:5432/backoffice",
        'f"<pg>ql+asyncpg://{user}:{password}@{host}/{name}"',
        "<pg>ql://user:<password>@host/db",
        "`<pg>ql://...` or `<pg>://...` as SQLAlchemy's URL",
        # ... or with an obvious placeholder (the rule's allowlist)
        "<pg>ql://app:pw@db/backoffice",
        "<pg>ql://user:password@host/db",
        "# DATABASE_URL=<pg>ql://<pg>:change-me@localhost:5432/backoffice",
        # SECRET_KEY without a literal value
        "<SK>=",
        "<SK>=${<SK>}",
        "<SK>=... uv run python -m backoffice serve",
        "Set <SK>=<48 random characters> in production.",
        "Production needs <SK> and DATABASE_URL from its environment.",
        '"<SK>": RUN_<SK>,',
        "<sk>: SecretStr = SecretStr(EXAMPLE_<SK>)",
        '<sk> = "too-short"',
        # ... another setting that merely ends in _SECRET_KEY, or the documented example key
        'EXAMPLE_<SK> = "Zq7-a-public-example-value-0123"',
        "<SK>=dev-secret-key-change-me-0123456789abcdef0123456789",
        # PEM blocks that are no private key, and prose
        "<BEGIN> PUBLIC KEY-----",
        "<BEGIN> CERTIFICATE-----",
        "Paste the PRIVATE KEY block, from BEGIN to END, into the secret store.",
        # API keys' near misses: the prefix, what lists show, placeholders, look-alikes
        "Keys start with `<bo>`; lists show `<bo>3f9a0c1d2e4b5a69` only.",
        "Authorization: Bearer <bo>...",
        "curl -H 'Authorization: Bearer <bo><public id>_<secret>'",
        f"<bo>3f9a0c1d2e4b5a69_{_SECRET_43[:-1]}",  # a secret one character short
        f"<bo>3f9a0c1d2e4b5a69_{_SECRET_43}x",  # ... or one too long
        f"<bo>3F9A0C1D2E4B5A69_{_SECRET_43}",  # an id that is not lowercase hex
        f"<bo>3f9a0c1d2e4b5a6_{_SECRET_43}",  # an id one digit short
        f"x<bo>3f9a0c1d2e4b5a69_{_SECRET_43}",  # inside a longer word
    ],
)
def test_benign_text_matches_no_rule(template: str) -> None:
    assert all_findings(planted(template)) == {}


def test_a_key_the_api_makes_matches_the_api_key_rule() -> None:
    """The rule follows the format the code makes (auth/api_keys.py), not just our samples."""
    keys = [new_api_key()[0] for _ in range(200)]

    for key in keys:
        assert all_findings(f"export BACKOFFICE_API_KEY={key}") == {API_KEY_RULE: [key]}
        assert all_findings(f'"Authorization": "Bearer {key}"') == {API_KEY_RULE: [key]}


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (".env.example", True),
        ("docs/AUDIT_GUIDE.md", True),
        ("docs/AUTHENTICATION_GUIDE.md", True),
        ("src/backoffice/core/config.py", False),
        (".env", False),
        ("deploy/.env.example.bak", False),
        ("src/docs/notes.md", False),
        ("README.md", False),
    ],
)
def test_the_allowlist_covers_the_example_env_file_and_docs_only(path: str, allowed: bool) -> None:
    assert path_allowed(path) is allowed


def tracked_files() -> list[str]:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: cannot list the tracked files to scan")
    listing = subprocess.run(  # noqa: S603  # a fixed binary and arguments
        [git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=False
    )
    if listing.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: no tracked files to scan")
    return [path for path in listing.stdout.decode().split("\0") if path]


def test_no_tracked_file_holds_a_secret_our_rules_catch() -> None:
    leaks = []
    scanned = 0
    for path in tracked_files():
        file = ROOT / path
        if path_allowed(path) or not file.is_file():  # allowlisted, or deleted in the work tree
            continue
        content = file.read_bytes()
        if b"\0" in content:
            continue  # binary
        scanned += 1
        for rule_id, secrets in all_findings(content.decode(errors="replace")).items():
            leaks += [f"{path}: {rule_id}: {secret[:4]}..." for secret in secrets]
    assert scanned > 0
    assert leaks == [], "secrets in tracked files (move them to the environment):\n" + "\n".join(
        leaks
    )


def run_gitleaks(gitleaks: str, source: Path, report: Path) -> None:
    """`gitleaks dir` (v8.19+), else the older `gitleaks detect --no-git`, on `source` with our
    config, writing a JSON report; findings do not make it fail."""
    options = ["--config", str(CONFIG_PATH), "--no-banner", "--exit-code", "0"]
    options += ["--report-format", "json", "--report-path", str(report)]
    has_dir = (
        subprocess.run(  # noqa: S603  # a fixed binary and arguments
            [gitleaks, "dir", "--help"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if has_dir:
        command = [gitleaks, "dir", *options, "."]
    else:
        command = [gitleaks, "detect", "--no-git", "--source", ".", *options]
    result = subprocess.run(  # noqa: S603  # a fixed binary and arguments
        command, cwd=source, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_gitleaks_itself_finds_planted_secrets_outside_the_allowlist(tmp_path: Path) -> None:
    gitleaks = shutil.which("gitleaks")
    if gitleaks is None:
        pytest.skip(
            "no gitleaks binary on PATH (the pre-commit hook builds its own); the rules were "
            "checked with Python's re above"
        )
    content = "\n".join(planted(template) for _, template, _ in PLANTED_SECRETS) + "\n"
    source = tmp_path / "source"
    for path in ["config/leaked.env", ".env.example", "docs/leaked.md"]:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(content)
    report = tmp_path / "report.json"
    run_gitleaks(gitleaks, source, report)

    findings: list[dict[str, Any]] = json.loads(report.read_text())
    found = set()
    for finding in findings:  # "File": relative to the scanned directory, or absolute
        file = (source / finding["File"]).resolve().relative_to(source.resolve())
        found.add((file.as_posix(), finding["RuleID"]))
    assert {rule_id for path, rule_id in found if path == "config/leaked.env"} >= CUSTOM_RULE_IDS
    assert {path for path, _ in found} == {"config/leaked.env"}
