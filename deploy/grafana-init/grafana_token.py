"""One-shot init of the compose stack: a Grafana service-account token for the backend.

Grafana cannot provision service accounts from files, so this runs once Grafana is
healthy (service ``grafana-init`` in docker-compose.yml): with the admin's basic
auth it finds or creates the service account ``plugin-backend`` (role Editor: it may
write annotations), creates a token and writes it as a plugin-backend settings file
(``grafana_token: ...``) on the shared volume. The api and worker read that file
through ``PLUGIN_BACKEND_CONFIG``. A token already in the file is kept while Grafana
still accepts it, so restarts do not pile up tokens.

Standard library only; configured by environment variables:

=========================  =====================================  ===========================
variable                   meaning                                default
=========================  =====================================  ===========================
GRAFANA_URL                Grafana base URL                       http://grafana:3000
GRAFANA_ADMIN_USER         admin login                            admin
GRAFANA_ADMIN_PASSWORD     admin password                         admin
GRAFANA_ORG_ID             organisation                           1
SERVICE_ACCOUNT_NAME       service account to find or create      plugin-backend
SERVICE_ACCOUNT_ROLE       its org role                           Editor
TOKEN_FILE                 settings file to write                 /data/grafana-token.yaml
WAIT_S                     how long to wait for Grafana           120
=========================  =====================================  ===========================
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Config", "GrafanaError", "ensure_token", "main"]


class GrafanaError(RuntimeError):
    """Grafana refused a call or could not be reached."""


@dataclass(frozen=True)
class Config:
    url: str = "http://grafana:3000"
    admin_user: str = "admin"
    admin_password: str = "admin"  # noqa: S105 (Grafana's own default; compose sets it)
    org_id: int = 1
    account: str = "plugin-backend"
    role: str = "Editor"
    token_file: Path = Path("/data/grafana-token.yaml")
    wait_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        d = cls()
        return cls(
            url=env.get("GRAFANA_URL", d.url).rstrip("/"),
            admin_user=env.get("GRAFANA_ADMIN_USER", d.admin_user),
            admin_password=env.get("GRAFANA_ADMIN_PASSWORD", d.admin_password),
            org_id=int(env.get("GRAFANA_ORG_ID", str(d.org_id))),
            account=env.get("SERVICE_ACCOUNT_NAME", d.account),
            role=env.get("SERVICE_ACCOUNT_ROLE", d.role),
            token_file=Path(env.get("TOKEN_FILE", str(d.token_file))),
            wait_s=float(env.get("WAIT_S", str(d.wait_s))),
        )


def _call(
    cfg: Config,
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, Any]:
    """One Grafana API call as the admin (or with ``token``): (status, parsed JSON)."""
    if token is not None:
        auth = f"Bearer {token}"
    else:
        basic = f"{cfg.admin_user}:{cfg.admin_password}".encode()
        auth = "Basic " + base64.b64encode(basic).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (the URL is configuration, http(s) only)
        cfg.url + path,
        data=data,
        method=method,
        headers={
            "Authorization": auth,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Grafana-Org-Id": str(cfg.org_id),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed


def _expect(status: int, parsed: Any, what: str) -> Any:
    if status >= 300:
        raise GrafanaError(f"{what}: Grafana answered {status}: {parsed}")
    return parsed


def wait_for_grafana(cfg: Config) -> None:
    deadline = time.monotonic() + cfg.wait_s
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = _call(cfg, "GET", "/api/health")
            if status == 200:
                return
            problem = f"/api/health answered {status}: {body}"
        except OSError as exc:
            problem = str(exc)
        time.sleep(1.0)
    raise GrafanaError(f"Grafana at {cfg.url} not healthy after {cfg.wait_s:.0f} s ({problem})")


def read_token(path: Path) -> str | None:
    """The token of a settings file this script wrote (``grafana_token: "..."``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "grafana_token":
            token = value.strip()
            try:
                parsed = json.loads(token)  # written JSON-quoted (valid YAML)
            except ValueError:
                return token or None
            return parsed if isinstance(parsed, str) and parsed else None
    return None


def write_token(path: Path, token: str) -> None:
    """Atomically write the settings file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".grafana-token-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                "# plugin-backend settings written by deploy/grafana-init/grafana_token.py\n"
                f"grafana_token: {json.dumps(token)}\n"
            )
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _service_account_id(cfg: Config) -> int:
    query = urllib.parse.urlencode({"query": cfg.account, "perpage": 100})
    found = _expect(
        *_call(cfg, "GET", f"/api/serviceaccounts/search?{query}"), "search service accounts"
    )
    for account in found.get("serviceAccounts", []):
        if account.get("name") == cfg.account:
            return int(account["id"])
    created = _expect(
        *_call(
            cfg,
            "POST",
            "/api/serviceaccounts",
            body={"name": cfg.account, "role": cfg.role, "isDisabled": False},
        ),
        "create service account",
    )
    print(f"grafana-init: created service account {cfg.account!r} ({cfg.role})")
    return int(created["id"])


def ensure_token(cfg: Config) -> bool:
    """Make sure ``cfg.token_file`` holds a token Grafana accepts; True if a new one."""
    wait_for_grafana(cfg)
    existing = read_token(cfg.token_file)
    if existing is not None:
        status, _ = _call(cfg, "GET", "/api/search?limit=1", token=existing)
        if status == 200:
            print(f"grafana-init: the token in {cfg.token_file} is still valid")
            return False
        print(f"grafana-init: the token in {cfg.token_file} was refused ({status}); replacing it")
    account_id = _service_account_id(cfg)
    name = f"{cfg.account}-{int(time.time())}"
    created = _expect(
        *_call(
            cfg,
            "POST",
            f"/api/serviceaccounts/{account_id}/tokens",
            body={"name": name, "secondsToLive": 0},
        ),
        "create service-account token",
    )
    write_token(cfg.token_file, str(created["key"]))
    print(f"grafana-init: wrote token {name!r} to {cfg.token_file}")
    return True


def main(env: Mapping[str, str] | None = None) -> int:
    cfg = Config.from_env(os.environ if env is None else env)
    try:
        ensure_token(cfg)
    except (GrafanaError, OSError, KeyError, ValueError) as exc:
        print(f"grafana-init: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
