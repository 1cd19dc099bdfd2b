"""`python -m services.risk` runs the risk service."""

from services.risk.app import RiskService
from services.runtime.server import run

if __name__ == "__main__":
    run(RiskService())
