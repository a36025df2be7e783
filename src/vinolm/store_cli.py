"""``vinolm pull | ls | rm | ps``: the model store in Ollama's verbs.

``pull`` prepares a model (catalog name, hub id, folder or .gguf) into ``$VINOLM_HOME``;
``ls`` lists what is prepared there with its size, format and source; ``rm`` deletes a
prepared model; ``ps`` asks a running server which of its models are loaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from vinolm.cliutil import status
from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="prepare a model in $VINOLM_HOME (export it once), like 'ollama pull'")
    p.add_argument("model", help="catalog name, hub id, HF folder or .gguf file")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("ls", help="list the models prepared in $VINOLM_HOME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("rm", help="delete a prepared model from $VINOLM_HOME")
    p.add_argument("model", help="a name as 'vinolm ls' shows it")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None,
                   help="only this export (default: every format of the model)")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("ps", help="the models a running server has loaded")
    p.add_argument("--url", default="127.0.0.1:8000", help="the server's HOST:PORT or URL")
    p.add_argument("--api-key", default=None)
    p.set_defaults(func=cmd_ps)


def cmd_pull(args: argparse.Namespace) -> int:
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=status)
    print(model.path)
    return 0


def prepared() -> list[dict[str, Any]]:
    """Every complete export under ``$VINOLM_HOME/models``, with what its record says."""
    from vinolm.export import export_task, folder_weight_bytes, is_complete, read_record
    from vinolm.models import vinolm_home

    root = vinolm_home() / "models"
    rows = []
    for record in sorted(root.glob("**/vinolm.json")):
        folder = record.parent
        if not is_complete(folder):
            continue
        info = read_record(folder)
        name = info.get("catalog") or str(folder.parent.relative_to(root))
        rows.append({"name": name, "format": info.get("weight_format", folder.name), "path": str(folder),
                     "size_mb": round(folder_weight_bytes(folder) / 1e6, 1), "source": info.get("source"),
                     "task": "embedding" if export_task(folder) == "feature-extraction" else "chat",
                     "created": info.get("created")})  # fmt: skip
    return rows


def cmd_ls(args: argparse.Namespace) -> int:
    rows = prepared()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        status("no model is prepared yet: 'vinolm pull NAME' prepares one")
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  FORMAT  TASK       SIZE MB  SOURCE")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['format']:<6}  {r['task']:<9}  {r['size_mb']:>7.1f}  {r['source']}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    rows = [r for r in prepared() if r["name"] == args.model
            and (args.weight_format is None or r["format"] == args.weight_format)]
    if not rows:
        formats = sorted(r["format"] for r in prepared() if r["name"] == args.model)
        if formats:
            raise InvalidRequest(f"{args.model!r} is prepared as {', '.join(formats)} only, not {args.weight_format}")
        names = sorted({r["name"] for r in prepared()}) or ["none"]
        raise InvalidRequest(f"{args.model!r} is not prepared here; prepared: {', '.join(names)}")
    for row in rows:
        shutil.rmtree(Path(row["path"]))
        status(f"deleted {row['name']} ({row['format']}) from {row['path']}")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    import httpx

    from vinolm.client.common import ClientError, auth_headers, http_base, raise_for_status

    base = http_base(args.url)
    try:
        response = httpx.get(f"{base}/v1/models", headers=auth_headers(args.api_key), timeout=10)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {base}: {exc}; is `vinolm serve` running there?") from None
    raise_for_status(response.status_code, response.content)
    cards = response.json()["data"]
    print(f"{'NAME':<32}  {'STATE':<9}  TASK")
    for card in cards:
        print(f"{card['id']:<32}  {card.get('state') or '?':<9}  {card.get('task') or '-'}")
    return 0
