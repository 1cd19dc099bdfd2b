"""`python -m services.audit` runs the audit service until SIGTERM or SIGINT."""

from services.audit.app import AuditService
from services.runtime.server import run

if __name__ == "__main__":
    run(AuditService())
