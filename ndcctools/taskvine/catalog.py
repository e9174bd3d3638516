"""Catalog server client (protocol.md §10): which catalogs to use, and querying them.

A catalog keeps the JSON records that managers (and factories) send it and serves them over
HTTP on its port. Clients ask ``GET /query/<base64 filter>`` and filter again locally, so a
catalog that ignores the filter does no harm.
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.request

DEFAULT_PORT = 9097
DEFAULT_HOSTS = "catalog.cse.nd.edu,backup-catalog.cse.nd.edu"
MAX_REPLY = 64 << 20


class CatalogError(OSError):
    """No catalog answered, or none answered with a JSON list."""


def catalog_hosts(spec: str | None = None) -> list[tuple[str, int]]:
    """The catalogs to use: ``spec`` (``"h1:p1,h2"``), else ``CATALOG_HOST`` (with
    ``CATALOG_PORT`` as the default port), else upstream's default pair."""
    port = DEFAULT_PORT
    if not spec:
        spec = os.environ.get("CATALOG_HOST") or DEFAULT_HOSTS
        if os.environ.get("CATALOG_PORT", "").isdigit():
            port = int(os.environ["CATALOG_PORT"])
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, p = item.rpartition(":")
        if sep and p.isdigit():
            out.append((host.strip("[]"), int(p)))
        else:
            out.append((item.strip("[]"), port))
    if not out:
        raise ValueError(f"no catalog host in {spec!r}")
    return out


def query(hosts: list[tuple[str, int]], filter_text: str = "true",
          timeout: float = 10.0) -> list[dict]:
    """All records of the first catalog in ``hosts`` that answers (the catalog may apply
    ``filter_text``, a JX expression; callers filter again). Raises ``CatalogError``."""
    errors = []
    encoded = base64.b64encode(filter_text.encode()).decode()
    for host, port in hosts:
        for path in (f"/query/{encoded}", "/query.json"):
            try:
                with urllib.request.urlopen(f"http://{host}:{port}{path}",
                                            timeout=timeout) as reply:
                    records = json.loads(reply.read(MAX_REPLY))
            except (OSError, ValueError) as e:
                errors.append(f"{host}:{port}{path}: {e}")
                continue
            if isinstance(records, list):
                return [r for r in records if isinstance(r, dict)]
            errors.append(f"{host}:{port}{path}: not a JSON list")
    raise CatalogError("no catalog answered: " + "; ".join(errors))


def find_managers(pattern: str, hosts: list[tuple[str, int]],
                  timeout: float = 10.0) -> list[dict]:
    """Records of TaskVine managers whose project name fully matches ``pattern``."""
    regex = re.compile(pattern)
    return [r for r in query(hosts, 'type=="vine_manager"', timeout)
            if r.get("type") == "vine_manager" and isinstance(r.get("project"), str)
            and regex.fullmatch(r["project"])]


def manager_addresses(record: dict, mode: str | None = None) -> list[tuple[str, int]]:
    """Where to reach the manager of a catalog ``record``, in the order to try, by connection
    mode (``by_ip``, ``by_hostname``, ``by_apparent_ip``; default: the record's own
    ``manager_preferred_connection``, else ``by_ip``)."""
    port = int(record.get("port", 0))
    mode = mode or record.get("manager_preferred_connection") or "by_ip"
    if mode == "by_hostname":
        hosts = [record.get("name")]
    elif mode == "by_apparent_ip":
        hosts = [record.get("address")]
    else:
        hosts = [i.get("address") for i in record.get("network_interfaces") or []
                 if isinstance(i, dict)]
        hosts.append(record.get("address"))
    seen: list[tuple[str, int]] = []
    for h in hosts:
        if isinstance(h, str) and h and (h, port) not in seen:
            seen.append((h, port))
    return seen
