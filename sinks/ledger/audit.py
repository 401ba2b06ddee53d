"""`audit verify`: recompute every hash chain of the ledger and report tampering.

Reads each table through `LedgerStore.source` (the one place that knows where a table's rows
live), sorted by chain, streamed column-block by column-block, and checks every chain
(`sinks.chain` explains the design: one chain per table, tenant, class and lane). Findings,
each naming the table, tenant, class, lane, chain position(s) and the id column value(s)
concerned:

- `changed`: a row whose `row_hash` does not match its content (the row was edited), or
  whose recomputed-and-rewritten hash no longer matches its successor's `prev_hash` or the
  head recorded in `chain_heads`.
- `removed`: missing `chain_seq`s (a gap, a missing start, or a tail shorter than the head
  recorded in `chain_heads`) that were not due to expire: the next surviving row's
  `prev_retain_until` (or the recorded head's `retain_until`) is still in the future.
- `inserted`: a row without chain columns, a second row at a `chain_seq`, a row beyond the
  last recorded head, or a row whose `prev_hash` links to nothing.

Rows are read first, then `chain_heads`: a flush landing between the two can show its rows
as beyond the recorded head; verify again to tell that from an insert.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.chain import (
    CANONICAL_OPTIONS,
    GENESIS,
    LANE,
    UNSET,
    ChainKey,
    canonical_default,
    late_columns,
)
from shipledger.sinks.ledger.store import LedgerStore

Kind = Literal["changed", "removed", "inserted"]


class RowFacts(NamedTuple):
    """What verification needs of one stored row (a tuple: built a million times a run)."""

    seq: int
    prev_hash: str
    stored_hash: str
    computed_hash: str
    prev_retain_until_ms: int | None
    row_id: str


@dataclass(frozen=True)
class RecordedHead:
    """One chain_heads entry."""

    seq: int
    row_hash: str
    retain_until_ms: int


@dataclass(frozen=True)
class Finding:
    """One sign of tampering."""

    kind: Kind
    table: str
    tenant: str
    retention_class: str
    lane: str
    seq_from: int
    seq_to: int
    ids: tuple[str, ...]
    detail: str

    def line(self) -> str:
        """One human-readable line."""
        seqs = (
            str(self.seq_from)
            if self.seq_from == self.seq_to
            else (f"{self.seq_from}..{self.seq_to}")
        )
        ids = ", ".join(self.ids) or "-"
        lane = f" lane={self.lane}" if self.lane else ""
        return (
            f"{self.kind.upper():8} {self.table} tenant={self.tenant} "
            f"class={self.retention_class}{lane} chain_seq={seqs} id={ids}: {self.detail}"
        )


@dataclass
class ChainResult:
    """Findings of one chain, and how many of its rows expired legitimately."""

    findings: list[Finding] = field(default_factory=list)
    rows: int = 0
    expired: int = 0
    #: Rows after the last recorded head: a flush in progress or an insert (`resolve_beyond`).
    beyond: list[RowFacts] = field(default_factory=list)


def verify_chain(
    key: ChainKey,
    rows: Iterable[RowFacts],
    heads: Sequence[RecordedHead],
    now_ms: int,
) -> ChainResult:
    """Check one chain: `rows` sorted by seq, `heads` its chain_heads entries. Pure."""
    result = ChainResult()

    def report(kind: Kind, lo: int, hi: int, ids: Iterable[str], detail: str) -> None:
        result.findings.append(Finding(kind, *key, lo, hi, tuple(ids), detail))

    recorded = {h.seq: h for h in heads}
    top = max((h.seq for h in heads), default=0)
    prev: RowFacts | None = None
    ordered = list(rows)
    result.rows = len(ordered)
    start, count = 0, len(ordered)
    while start < count:
        seq = ordered[start].seq
        end = start + 1
        while end < count and ordered[end].seq == seq:
            end += 1
        following = ordered[end].prev_hash if end < count else None
        if seq == 0:
            for row in ordered[start:end]:
                report("inserted", 0, 0, [row.row_id], "row has no chain columns (not the sink's)")
            start = end
            continue
        if end == start + 1:
            row = ordered[start]
        else:
            group = ordered[start:end]
            row = _choose(group, prev, following, recorded.get(seq))
            for other in group:
                if other is not row:
                    report("inserted", seq, seq, [other.row_id], f"second row at chain_seq {seq}")
        start = end
        expected = 1 if prev is None else prev.seq + 1
        if seq > expected:
            if row.prev_retain_until_ms is not None and row.prev_retain_until_ms <= now_ms:
                result.expired += seq - expected
            else:
                around = [prev.row_id] if prev else []
                report(
                    "removed",
                    expected,
                    seq - 1,
                    [*around, row.row_id],
                    "rows missing before id "
                    + row.row_id
                    + (f" (after {prev.row_id})" if prev else " (chain start)")
                    + f": chain_seq {seq - 1} was not due to expire yet",
                )
        elif prev is not None and row.prev_hash != prev.stored_hash:
            report(
                "changed",
                prev.seq,
                prev.seq,
                [prev.row_id],
                f"row_hash was rewritten: the next row ({row.row_id}) links to another hash",
            )
        elif prev is None and seq == 1 and row.prev_hash != GENESIS:
            report("inserted", seq, seq, [row.row_id], "first row does not start the chain")
        if row.computed_hash != row.stored_hash:
            report("changed", seq, seq, [row.row_id], "content does not match row_hash")
        head = recorded.get(seq)
        hash_ok = row.computed_hash == row.stored_hash
        if head is not None and head.row_hash != row.stored_hash and hash_ok:
            report("changed", seq, seq, [row.row_id], "row_hash differs from the recorded head")
        if seq > top:
            result.beyond.append(row)
        prev = row
    _check_tail(prev, heads, now_ms, result, report)
    return result


def resolve_beyond(
    key: ChainKey, beyond: Sequence[RowFacts], heads: Sequence[RecordedHead]
) -> list[Finding]:
    """Rows past the head recorded when verification started, judged against chain_heads
    read again at the end: those a head now covers were a flush in progress; the rest were
    inserted around the sink."""
    if not beyond:
        return []
    top = max(heads, key=lambda h: h.seq) if heads else None
    covered = top.seq if top else 0
    findings: list[Finding] = []
    for row in beyond:
        if top is not None and row.seq == top.seq and row.stored_hash != top.row_hash:
            findings.append(
                Finding(
                    "changed",
                    *key,
                    row.seq,
                    row.seq,
                    (row.row_id,),
                    "row_hash differs from the recorded head",
                )
            )
    extra = [row for row in beyond if row.seq > covered]
    if extra:
        findings.append(
            Finding(
                "inserted",
                *key,
                extra[0].seq,
                extra[-1].seq,
                tuple(row.row_id for row in extra[:20]),
                f"{len(extra)} row(s) beyond the last recorded chain head ({covered})",
            )
        )
    return findings


def _choose(
    group: list[RowFacts], prev: RowFacts | None, following: str | None, head: RecordedHead | None
) -> RowFacts:
    """The genuine row among those sharing a chain_seq: the one the chain vouches for."""

    def score(row: RowFacts) -> tuple[bool, bool, bool, bool]:
        links = prev is None or row.prev_hash == prev.stored_hash
        return (
            head is not None and head.row_hash == row.stored_hash,
            following is not None and following == row.stored_hash,
            links,
            row.computed_hash == row.stored_hash,
        )

    return max(group, key=score)


def _check_tail(
    last: RowFacts | None,
    heads: Sequence[RecordedHead],
    now_ms: int,
    result: ChainResult,
    report: Any,
) -> None:
    if not heads:
        return
    top = max(heads, key=lambda h: h.seq)
    last_seq = last.seq if last else 0
    if last_seq < top.seq:
        if top.retain_until_ms <= now_ms:
            result.expired += top.seq - last_seq
        else:
            after = [last.row_id] if last else []
            report(
                "removed",
                last_seq + 1,
                top.seq,
                after,
                f"tail missing: chain_heads recorded chain_seq {top.seq}"
                + (f", last row is {last.row_id}" if last else ", no rows left"),
            )


# --- reading the ledger ---------------------------------------------------------------


@dataclass
class Report:
    """The outcome of `verify`."""

    findings: list[Finding]
    rows: int
    chains: int
    expired: int
    seconds: float

    @property
    def clean(self) -> bool:
        """No tampering found."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "clean": self.clean,
            "rows": self.rows,
            "chains": self.chains,
            "expired_rows_tolerated": self.expired,
            "seconds": round(self.seconds, 3),
            "findings": [asdict(f) for f in self.findings],
        }

    def text(self) -> str:
        """Findings, one a line, then the summary."""
        lines = [f.line() for f in self.findings]
        verdict = "CLEAN" if self.clean else f"TAMPERING FOUND ({len(self.findings)} findings)"
        lines.append(
            f"{verdict}: {self.rows} rows in {self.chains} chains verified in "
            f"{self.seconds:.2f}s ({self.expired} expired rows tolerated)"
        )
        return "\n".join(lines)


def _select_list(spec: ddl.TableSpec) -> tuple[list[str], str]:
    """Columns hashed (all but row_hash; datetime columns as epoch ms, as `chain` hashes them,
    converted by ClickHouse; datetimes nested in arrays/tuples by `chain`'s canonical default)
    and the SELECT list: those, then row_hash last."""
    names = [c.name for c in spec.columns if c.name != "row_hash"]
    exprs = []
    for column in spec.columns:
        if column.name == "row_hash":
            continue
        quoted = ddl.quote_ident(column.name)
        if column.holds_datetime:
            exprs.append(f"toUnixTimestamp64Milli({quoted}) AS {quoted}")
        else:
            exprs.append(quoted)
    return names, ", ".join([*exprs, "`row_hash`"])


def _chains(
    store: LedgerStore, spec: ddl.TableSpec, tenant: str | None
) -> Iterator[tuple[ChainKey, list[RowFacts]]]:
    """Each chain of the table (key, rows by chain_seq), its row hashes recomputed."""
    names, select = _select_list(spec)
    pos = {name: i for i, name in enumerate(names)}
    i_tenant, i_class, i_seq = pos["tenant"], pos["retention_class"], pos["chain_seq"]
    i_lane = pos[LANE]
    i_prev, i_prev_ru, i_id = pos["prev_hash"], pos["prev_retain_until"], pos[spec.id_column]
    late = [(pos[name], name) for name in late_columns(spec.name) if name in pos]
    where = "WHERE tenant = {tenant:String} " if tenant is not None else ""
    sql = (
        f"SELECT {select} FROM {store.source(spec.name)} {where}"  # noqa: S608
        "ORDER BY tenant, retention_class, chain_lane, chain_seq"
    )
    sha256, dumps, facts = hashlib.sha256, orjson.dumps, RowFacts
    key: ChainKey | None = None
    rows: list[RowFacts] = []
    for block in store.stream_columns(sql, {"tenant": tenant} if tenant is not None else None):
        for row in zip(*block, strict=True):
            if (
                key is None
                or row[i_tenant] != key[1]
                or row[i_class] != key[2]
                or row[i_lane] != key[3]
            ):
                if key is not None:
                    yield key, rows
                key, rows = (spec.name, row[i_tenant], row[i_class], row[i_lane]), []
            # zip with the names stops before row_hash (last): the dict is what chain hashed
            # (`chain.canonical_bytes`: an empty late column is left out).
            fields = dict(zip(names, row, strict=False))
            for index, name in late:
                if row[index] in UNSET:
                    del fields[name]
            computed = sha256(dumps(fields, option=CANONICAL_OPTIONS, default=canonical_default))
            rows.append(
                facts(
                    row[i_seq],
                    row[i_prev],
                    row[-1],
                    computed.hexdigest(),
                    row[i_prev_ru],
                    str(row[i_id]),
                )
            )
    if key is not None:
        yield key, rows


def _recorded_heads(
    store: LedgerStore, table: str, tenant: str | None
) -> dict[ChainKey, list[RecordedHead]]:
    source = ddl.qualified(store.database, ddl.CHAIN_HEADS)
    where = "table = {table:String}" + (
        " AND tenant = {tenant:String}" if tenant is not None else ""
    )
    sql = (
        (
            "SELECT tenant, retention_class, chain_lane, chain_seq, row_hash, "
            "toUnixTimestamp64Milli(retain_until) FROM {source} WHERE {where} "
            "ORDER BY tenant, retention_class, chain_lane, chain_seq"
        )
        .replace("{source}", source)
        .replace("{where}", where)
    )
    _, rows = store.query(
        sql,
        {"table": table, **({"tenant": tenant} if tenant is not None else {})},
    )
    out: dict[ChainKey, list[RecordedHead]] = {}
    for t, klass, lane, seq, row_hash, retain_ms in rows:
        out.setdefault((table, str(t), str(klass), str(lane)), []).append(
            RecordedHead(int(str(seq)), str(row_hash), int(str(retain_ms)))
        )
    return out


def verify(store: LedgerStore, tenant: str | None = None, table: str | None = None) -> Report:
    """Verify every chain (of `tenant`, of `table`) of the ledger."""
    started = time.perf_counter()
    specs = ddl.tables()
    if table is not None and table not in specs:
        raise ValueError(f"no ledger table {table!r} (tables: {', '.join(specs)})")
    _, now_rows = store.query("SELECT toUnixTimestamp64Milli(now64(3))")
    now_ms = int(str(now_rows[0][0]))
    findings: list[Finding] = []
    rows = chains = expired = 0
    for spec in specs.values():
        if table is not None and spec.name != table:
            continue
        # Heads before rows: a flush landing in between shows as rows beyond a head, which
        # the heads read again at the end account for (never as a removed tail).
        heads = _recorded_heads(store, spec.name, tenant)
        beyond: dict[ChainKey, list[RowFacts]] = {}
        seen: set[ChainKey] = set()
        for key, facts in _chains(store, spec, tenant):
            result = verify_chain(key, facts, heads.get(key, []), now_ms)
            seen.add(key)
            rows += result.rows
            expired += result.expired
            findings.extend(result.findings)
            if result.beyond:
                beyond[key] = result.beyond
        for key in heads.keys() - seen:  # chains with no row left at all
            result = verify_chain(key, [], heads[key], now_ms)
            expired += result.expired
            findings.extend(result.findings)
        chains += len(seen | heads.keys())
        if beyond:
            heads = _recorded_heads(store, spec.name, tenant)
            for key, facts in beyond.items():
                findings.extend(resolve_beyond(key, facts, heads.get(key, [])))
    return Report(findings, rows, chains, expired, time.perf_counter() - started)
