"""Approvals of change requests by authenticated people: who the approver is (an OIDC bearer
token or an LDAP bind, `oidc`, `directory`) and whether they may approve (`identity`). The
HTTP route and `shipledger approve` build on these; whether the approvals recorded satisfy the
policy for a deployment is judged in `shipledger.processors.approvals`."""
