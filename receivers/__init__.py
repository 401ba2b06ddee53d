"""Receivers: alerts (and their resolutions) delivered outside the pipeline (ticketing systems,
pagers, chats, webhooks), and the one delivery engine that every kind of receiver plugs into.

- `receiver`: what a kind of receiver is (`ReceiverKind`): pure functions from a delivery (an
  alert for one receiver) to an HTTP request, and from the answer to a ticket; optionally a
  request that finds the ticket a previous attempt opened (the provider's own idempotency).
- `servicenow`, `jira`, `webhook`, `pagerduty`, `opsgenie`, `slack`, `alertmanager`: the
  kinds; `registry`: the kinds by name, their options checked against the policy, and each
  configured receiver with its secret (`Target`).
- `engine`: one delivery with retries (exponential backoff, full jitter, Retry-After) over
  httpx; `record`: the local record of deliveries (SQLite); `plan`: what to do with each
  delivery of a batch of alerts (pure); `escalator`: the consumer of the alerts topic that
  runs them, publishes each outcome to the `escalations` topic (stored in the ledger) and
  dead-letters what it gave up on; `cli`: `shipledger escalate run` (the group, with
  `deliveries`, is `shipledger.escalations_cli`).

Adding a kind of receiver is one module (options model, request, reading the answer) and its
line in `registry.KINDS`.
"""
