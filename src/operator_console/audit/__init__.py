"""The tamper-evident audit log and the redaction that keeps secrets out of it."""

from operator_console.audit.log import AuditLog, AuditRow, VerifyResult
from operator_console.audit.redact import redact, register_secret, register_secrets_from_env
from operator_console.audit.summary import row_summaries

__all__ = [
    "AuditLog",
    "AuditRow",
    "VerifyResult",
    "redact",
    "register_secret",
    "register_secrets_from_env",
    "row_summaries",
]
