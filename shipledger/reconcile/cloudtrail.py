"""AWS CloudTrail log files (`{"Records": [...]}`, as a trail delivers them to S3, gzip or
not): the successful deployments of ECS services and Lambda functions.

Kept: `eventSource` ecs.amazonaws.com with `eventName` UpdateService or CreateService
(`requestParameters.cluster`, default `default`, and `service` / `serviceName`), and
lambda.amazonaws.com with an `eventName` starting UpdateFunctionCode or PublishVersion (the
API version is part of the name, e.g. UpdateFunctionCode20150331v2;
`requestParameters.functionName`, a name or an ARN); no `errorCode` (a refused call changed
nothing). The change is at `eventTime`. A record's location is its file and index.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from shipledger.reconcile.evidence import (
    Entry,
    Malformed,
    Observation,
    last_segment,
    read_each,
    utc,
)

SOURCE = "cloudtrail"
ECS_EVENTS = frozenset({"UpdateService", "CreateService"})
LAMBDA_PREFIXES = ("UpdateFunctionCode", "PublishVersion")


def parse(name: str, lines: Iterable[tuple[int, str]]) -> Iterator[Entry]:
    """Each record of CloudTrail file `name` (its numbered lines) as an Observation, a
    Malformed or None; a file that is not a CloudTrail document is one Malformed."""
    file = Path(name).name
    try:
        document = json.loads("".join(line for _, line in lines))
    except ValueError as exc:
        yield Malformed(f"{file}:{getattr(exc, 'lineno', 1)}", f"not JSON: {exc}")
        return
    except RecursionError:
        yield Malformed(f"{file}:1", "not JSON: nested too deeply to read")
        return
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        yield Malformed(f"{file}:1", "Records: required, an array (a CloudTrail log file)")
        return
    located = ((f"{file}:Records[{index}]", record) for index, record in enumerate(records))
    yield from read_each(located, partial(_observation, file=file))


def _observation(record: Any, location: str, file: str) -> Observation | None:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    source, event = record.get("eventSource"), record.get("eventName")
    if not isinstance(event, str):
        raise ValueError("eventName: required")
    ecs = source == "ecs.amazonaws.com" and event in ECS_EVENTS
    function = source == "lambda.amazonaws.com" and event.startswith(LAMBDA_PREFIXES)
    if not (ecs or function) or record.get("errorCode"):
        return None
    at = utc(record.get("eventTime"), "eventTime")
    params = record.get("requestParameters")
    if not isinstance(params, dict):
        raise ValueError("requestParameters: required, an object")
    region = str(record.get("awsRegion") or "")
    account = str(record.get("recipientAccountId") or "")
    common: tuple[tuple[str, str], ...] = (("file", file), ("region", region), ("account", account))
    if ecs:
        service = params.get("service") or params.get("serviceName")
        if not isinstance(service, str) or not service:
            raise ValueError("requestParameters.service: required (serviceName on CreateService)")
        cluster = last_segment(str(params.get("cluster") or "default"))
        workload = last_segment(service)
        ecs_fields = (*common, ("cluster", cluster), ("service", workload))
        return Observation(SOURCE, location, at, at, f"ecs:{event}", workload, ecs_fields)
    name = params.get("functionName")
    if not isinstance(name, str) or not name:
        raise ValueError("requestParameters.functionName: required")
    workload = _function_name(name)
    fields = (*common, ("function", workload))
    return Observation(SOURCE, location, at, at, f"lambda:{event}", workload, fields)


def _function_name(name: str) -> str:
    """`my-function` of a name, an ARN or a partial ARN (`123456789012:function:my-function`,
    with or without a `:version` or `:alias` after it)."""
    if ":function:" in name:
        return name.split(":function:", 1)[1].split(":", 1)[0]
    return name
