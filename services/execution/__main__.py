"""`python -m services.execution` runs the execution service."""

from services.execution.app import ExecutionService
from services.runtime.server import run

if __name__ == "__main__":
    run(ExecutionService())
